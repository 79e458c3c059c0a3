"""The interface of a definition kind, and what a kind gets while it loads an entry.

A kind says which entries of an architecture folder it claims (a file such as `<name>.def` or
`<name>.yaml`, or a folder such as one with a Dockerfile or a `spack.yaml`), loads a claimed entry
into `ImageSpec`s (reporting problems through the `LoadContext`, never raising), gives the exact
recipe text the build uses and the digest hashes, and names the builder that builds it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ci.definitions.model import Catalog, ImageSpec, UnsupportedDefinition
from ci.errors import Problem


@dataclass
class LoadContext:
    """What a kind gets while loading one entry: where it is, and where its problems go."""

    root: Path  # the definitions root (links resolved); fragments are named relative to it
    arch: str
    catalog: Catalog
    texts: dict[Path, str] = field(default_factory=dict)  # fragments read once per load, shared by definitions
    options: Mapping[str, Any] = field(default_factory=dict)  # configuration sections kinds read (ci.spack)
    looked_for: str = "Dockerfile"  # what a definition folder may hold, from the registry of kinds

    def problem(self, key: str, path: Path, field_name: str, message: str, fix: str) -> None:
        self.catalog.add_problem(key, Problem(path, field_name, message, fix))

    def add(self, key: str, problem: Problem) -> None:
        self.catalog.add_problem(key, problem)

    def warn(self, path: Path, field_name: str, message: str, fix: str) -> None:
        self.catalog.warnings.append(Problem(path, field_name, message, fix))

    def not_handled(self, definition: UnsupportedDefinition) -> None:
        self.catalog.unsupported.append(definition)


class DefinitionKind(Protocol):
    """One way of writing a definition (Dockerfile folder, Spack environment, Singularity .def)."""

    @property
    def name(self) -> str:
        """The kind's name, as ImageSpec.kind and in plan output."""
        ...

    @property
    def builder(self) -> str:
        """What builds it, e.g. "docker"."""
        ...

    @property
    def looks_for(self) -> str:
        """How a person recognises it, for "no ... found" messages, e.g. "Dockerfile"."""
        ...

    @property
    def recipe_file(self) -> str:
        """The file name `inv render --out` writes the recipe to, e.g. "Dockerfile"."""
        ...

    def claims(self, entry: Path) -> bool:
        """True when this kind reads `entry` (a file or a folder of an architecture folder)."""
        ...

    def load(self, entry: Path, arch: str, context: LoadContext) -> list[ImageSpec]:
        """The image specs of a claimed entry; problems go to `context`, an invalid entry gives none."""
        ...

    def recipe(self, spec: ImageSpec) -> str:
        """The exact text the builder gets for `spec` (what the digest hashes and `inv render` writes)."""
        ...

    def on_demand(self, catalog: Catalog, options: Mapping[str, Any]) -> set[str]:
        """Keys of loaded definitions that this kind's settings say are built only when another image
        needs them (or when named), never by a plain build-all: e.g. the Spack builder images."""
        ...


@dataclass(frozen=True)
class NotHandled:
    """A kind recognised by its files but not built by this release: listed, never an error."""

    name: str
    looks_for: str
    file_suffixes: tuple[str, ...]  # a file <name><suffix> in the architecture folder
    folder_marker: str  # a folder holding this file ("{name}" is the folder's name), without a Dockerfile
    file_reason: str
    folder_reason: str
    builder: str = "none"
    recipe_file: str = ""

    def claims(self, entry: Path) -> bool:
        if entry.is_file():
            return entry.suffix in self.file_suffixes
        if entry.is_dir():
            marker = entry / self.folder_marker.format(name=entry.name)
            return marker.is_file() and not os.path.lexists(entry / "Dockerfile")
        return False

    def load(self, entry: Path, arch: str, context: LoadContext) -> list[ImageSpec]:
        if entry.is_file():
            definition = UnsupportedDefinition(name=entry.stem, arch=arch, source=entry, kind=self.name,
                                               reason=self.file_reason)
        else:
            definition = UnsupportedDefinition(name=entry.name, arch=arch, kind=self.name, reason=self.folder_reason,
                                               source=entry / self.folder_marker.format(name=entry.name))
        context.not_handled(definition)
        return []

    def recipe(self, spec: ImageSpec) -> str:
        raise LookupError(f"{self.name} definitions are not built by this release")

    def on_demand(self, catalog: Catalog, options: Mapping[str, Any]) -> set[str]:
        return set()
