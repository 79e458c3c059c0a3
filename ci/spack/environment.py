"""Spacktainers-style environment files: the schema, the `files:` pairs, the version rule, the merge.

The file is `spack: {specs: [...], packages: {...}, ...}` plus an optional
`spacktainer: {files: ["src:dst", ...]}`; `spacktainer` is ours and never reaches Spack. Every
problem of a file is reported in one pass, one line each, naming the field and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ci.config.spack import SpackSettings
from ci.documents import DocumentRefused, Source, load_yaml
from ci.errors import Problem
from ci.spack.merge import MergeConflict, merge
from ci.validation import changed_problems, has_control, invalid, not_text, problems_from, shown

_SPEC_NAME = re.compile(r"^\s*([A-Za-z0-9_][A-Za-z0-9_.-]*)")
# The root's own version: `name@1.2.3`, `name @=1.2.3`; not a range (`@1:`, `@1,2`), not `^dep@1`.
_PINNED = re.compile(r"^\s*[A-Za-z0-9_][A-Za-z0-9_.-]*\s*@=?([A-Za-z0-9_][A-Za-z0-9_.-]*)(?![:,A-Za-z0-9_.=-])")
_TAG_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_TARGET = re.compile(r"^/[^\s:'\"\\$`]*\Z")


@dataclass(frozen=True)
class FilePair:
    """One `src:dst` entry: a file or folder copied to an absolute path.

    `base` is where `source` was found: "" for the definition folder, else the Spacktainers files
    root (`spacktainer/` beside the definitions, where sources read `files/<name>/...`).
    """

    source: str
    target: str
    base: str = ""


def _file_pair(value: Any, info: ValidationInfo) -> FilePair:
    folder: Path | None = (info.context or {}).get("folder")
    if isinstance(value, dict):
        if len(value) == 1:
            source, target = next(iter(value.items()))
            raise invalid(f"is a mapping ({shown(source)}: {shown(target)}), not a 'src:dst' string; YAML read "
                          "the space after ':' as a key",
                          f"write it without the space: '{source}:{target}'")
        raise invalid("is a mapping, not a 'src:dst' string",
                      "write each pair as one string, e.g. 'files/a.sh:/opt/a.sh'")
    if not isinstance(value, str):
        raise invalid(f"expected a 'src:dst' string, got {type(value).__name__}", "write e.g. 'files/a.sh:/opt/a.sh'")
    if has_control(value):
        raise invalid(f"{shown(value)} contains a control character", "remove line breaks and tabs")
    source, sep, target = value.partition(":")
    if not sep or not source or not target:
        raise invalid(f"{shown(value)} is not a 'src:dst' pair", "write it as 'files/a.sh:/opt/a.sh'")
    if source != source.strip() or target != target.strip():
        raise invalid(f"{shown(value)} has a space around ':'", f"write it as '{source.strip()}:{target.strip()}'")
    if PurePosixPath(source).is_absolute() or ".." in PurePosixPath(source).parts:
        raise invalid(f"source {shown(source)} leaves the definition folder",
                      "name a file or folder inside the definition folder, relative to it")
    base = ""
    if folder is not None:
        roots: list[Path] = [folder, *(info.context or {}).get("roots", ())]
        found = [root for root in roots if os.path.lexists(root / source)]
        if not found:
            where = " or ".join(str(root / source) for root in roots)
            raise invalid(f"source {shown(source)} does not exist", f"create {where} or fix the path")
        root = found[0]
        if not (root / source).resolve().is_relative_to(root.resolve()):
            raise invalid(f"source {shown(source)} leaves {'the definition folder' if root == folder else root} "
                          "(through a link)", "copy the file there instead of linking it")
        base = "" if root == folder else str(root)
    if not _TARGET.match(target):
        raise invalid(f"target {shown(target)} is not an absolute path", "write the target as /path/in/image")
    return FilePair(source=source, target=target, base=base)


class SpacktainerSection(BaseModel):
    """Our own key: what to copy into the runtime image besides the Spack environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    files: tuple[Annotated[FilePair, BeforeValidator(_file_pair)], ...] = ()


def _spec(value: Any) -> str:
    if not isinstance(value, str):
        if isinstance(value, int | float):
            raise not_text(value)
        raise invalid(f"expected a spec string, got {type(value).__name__}", "write a Spack spec, e.g. 'zlib@1.3'")
    if has_control(value) or not value.strip() or len(value) > 1000:
        raise invalid(f"{shown(value)} is not a Spack spec", "write one spec per entry, e.g. 'py-numpy@1.26'")
    if not _SPEC_NAME.match(value):
        raise invalid(f"{shown(value)} does not start with a package name", "start the spec with the package, "
                      "e.g. 'hdf5+mpi'")
    return value


class SpackSection(BaseModel):
    """The `spack:` mapping. Keys other than `specs` are Spack's own and pass through to the merge."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specs: tuple[Annotated[str, BeforeValidator(_spec)], ...] = Field(
        min_length=1, json_schema_extra={"fix": "list at least one spec, e.g. specs: [zlib]"})

    @field_validator("specs", mode="before")
    @classmethod
    def _specs(cls, value: Any) -> Any:
        if value is None:
            raise invalid("is empty", "list at least one spec, e.g. specs: [zlib]")
        return value


class EnvironmentFile(BaseModel):
    """A whole Spacktainers YAML (or `spack.yaml`) file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spack: SpackSection
    spacktainer: SpacktainerSection = SpacktainerSection()


@dataclass(frozen=True)
class SpackEnvironment:
    """A parsed definition: the user's `spack:` mapping as written, and our extras."""

    path: Path
    spack: dict[str, Any]
    files: tuple[FilePair, ...]

    @property
    def specs(self) -> tuple[str, ...]:
        return tuple(self.spack.get("specs") or ())


def parse_environment(path: Path, folder: Path, roots: Sequence[Path] = ()) -> tuple[SpackEnvironment | None,
                                                                                       list[Problem]]:
    """Read one environment file; `files:` sources are relative to `folder`, else to one of `roots`."""
    try:
        data, source = load_yaml(path.read_text(encoding="utf-8"), name=path.name)
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(path, "", f"cannot be read ({exc.__class__.__name__})", "make it a UTF-8 text file")]
    except DocumentRefused as exc:
        return None, [Problem(path, "", exc.message, exc.fix)]
    return parse_environment_data(data, path, folder, roots, source=source)


def parse_environment_data(data: Any, path: Path, folder: Path, roots: Sequence[Path] = (), *,
                           source: Source | None = None) -> tuple[SpackEnvironment | None, list[Problem]]:
    """Check already-read YAML data of `path` (see parse_environment).

    `source` (from `ci.documents`) names the lines of values refused as not text, and finds the
    values under `spack:` that would reach spack.yaml otherwise than written (`2.10` as `2.1`).
    """
    if not isinstance(data, dict):
        return None, [Problem(path, "", "expected a mapping with the key 'spack'",
                              "write 'spack:' with 'specs:' below it")]
    try:
        model = EnvironmentFile.model_validate(data, context={"folder": folder, "roots": tuple(roots)})
    except ValidationError as exc:
        return None, problems_from(exc, file=path, model=EnvironmentFile, source=source)
    if source is not None:
        changed = changed_problems(source, file=path, under=("spack",), passed_to="spack.yaml")
        if changed:
            return None, changed
    spack = dict(data["spack"])
    return SpackEnvironment(path=path, spack=spack, files=model.spacktainer.files), []


def merged_environment(env: SpackEnvironment, settings: SpackSettings, arch: str) -> tuple[dict[str, Any] | None,
                                                                                           list[Problem]]:
    """Template, then the architecture's target, then the definition; a conflict is one problem."""
    try:
        base = merge(settings.template, settings.target_layer(arch), overlay_name=f"ci.spack.targets.{arch}")
        return merge(base, {"spack": env.spack}), []
    except MergeConflict as conflict:
        return None, [Problem(env.path, conflict.path,
                              f"sets {_value(conflict.overlay)} but {conflict.base_name} sets {_value(conflict.base)}",
                              "remove the key from the definition, use the template's value, or change "
                              "ci.spack.template (a list appends to the template's list; two values cannot)")]


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return shown(value)


def pinned_version(spec: str) -> str | None:
    """The root's exact version when the spec pins one: `py-foo@3.0.0+mpi` -> `3.0.0`; ranges give None."""
    match = _PINNED.match(spec)
    return match.group(1) if match else None


def spack_version(env: SpackEnvironment, metadata_version: str | None) -> tuple[str, list[Problem]]:
    """First spec's exact version, else container.yaml's `version:`, else `latest`."""
    version = pinned_version(env.specs[0]) if env.specs else None
    if version is None:
        return metadata_version or "latest", []
    if not _TAG_SAFE.match(version):
        return "latest", [Problem(env.path, "spack.specs[0]",
                                  f"version {shown(version)} cannot be part of an image tag",
                                  "pin a version of letters, digits, '.', '_' and '-', or set version: in "
                                  "container.yaml")]
    return version, []
