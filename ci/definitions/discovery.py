"""Finding definitions: the architecture folders, and which kind reads each entry.

Nothing found under the root can stop the others from loading: an unreadable folder, a link
leaving the root, a FIFO or a definition with a hundred problems is filed as problems under its
own key, so `--only <another image>` still works and every problem is reported in one pass.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ci.definitions.files import fence_of
from ci.definitions.graph import resolve_parents
from ci.definitions.kinds import KINDS, kind_for, looked_for
from ci.definitions.kinds.base import LoadContext
from ci.definitions.model import COMMON_FOLDER, KNOWN_ARCHES, Catalog, UnsupportedDefinition, definition_key
from ci.errors import Problem
from ci.validation import shown


def load_catalog(root: Path, arches: Sequence[str] | None = None, options: Mapping[str, Any] | None = None) -> Catalog:
    """Read every definition under `root` (optionally only some architectures).

    `options` are the configuration sections kinds read (`spack`: ci.spack, `base_image`).

    Problems are collected in the catalog instead of raised, so that the caller can decide
    which of them block the work at hand (see `Catalog.raise_for`).
    """
    fence_of.cache_clear()  # folders are resolved afresh for every load
    with contextlib.suppress(OSError, RuntimeError):  # a link loop: reported below as not a folder
        root = root.resolve()
    catalog = Catalog(root=root)
    if not root.is_dir():
        what = ("the definitions root is not a folder" if os.path.lexists(root)
                else "the definitions folder does not exist")
        catalog.add_problem("", Problem(root, "", what,
                                        "pass --definitions DIR or set ci.definitions in invoke.yaml"))
        return catalog
    wanted = list(arches) if arches else None
    for arch_dir in _listing(catalog, root, ""):
        name = arch_dir.name
        if name.startswith(".") or not arch_dir.is_dir() or (name == COMMON_FOLDER and not arch_dir.is_symlink()):
            continue
        if name.startswith("_") and name[1:] in KNOWN_ARCHES and not arch_dir.is_symlink():
            _list_disabled(catalog, arch_dir)
            continue
        if name not in KNOWN_ARCHES:
            catalog.add_problem(name, Problem(
                arch_dir, "", f"{shown(name)} is not an architecture folder",
                f"move definitions into one of {', '.join(KNOWN_ARCHES)}/ (or common/ for fragments)"))
            continue
        if arch_dir.is_symlink():
            catalog.add_problem(name, Problem(arch_dir, "", f"{shown(name)} is a link",
                                              "make the architecture folder a plain folder of the definitions root"))
            continue
        if wanted is not None and name not in wanted:
            continue
        context = LoadContext(root=root, arch=name, catalog=catalog, options=dict(options or {}),
                              looked_for=looked_for())
        for entry in _listing(catalog, arch_dir, name):
            if not entry.name.startswith("."):
                _load_entry(context, entry)
    resolve_parents(catalog)
    catalog.on_demand = set().union(*(kind.on_demand(catalog, dict(options or {})) for kind in KINDS.values()))
    return catalog


def _list_disabled(catalog: Catalog, arch_dir: Path) -> None:
    """Spacktainers' convention: an architecture folder named `_<arch>` is switched off, not wrong."""
    for entry in _listing(catalog, arch_dir, arch_dir.name):
        if entry.name.startswith("."):
            continue
        kind = kind_for(entry)
        catalog.unsupported.append(UnsupportedDefinition(
            name=entry.stem if entry.is_file() else entry.name, arch=arch_dir.name[1:], source=entry,
            kind=kind.name if kind is not None else "unknown",
            reason=f"disabled: the architecture folder {arch_dir.name}/ starts with '_' (rename it to "
                   f"{arch_dir.name[1:]}/ to build it)"))


def _listing(catalog: Catalog, folder: Path, key: str) -> list[Path]:
    try:
        return sorted(Path(entry.path) for entry in os.scandir(folder))
    except OSError as exc:
        catalog.add_problem(key, Problem(folder, "", f"cannot be listed ({exc.strerror})",
                                         "make the folder readable and searchable (chmod a+rx)"))
        return []


def _load_entry(context: LoadContext, entry: Path) -> None:
    catalog = context.catalog
    key = f"{context.arch}/{entry.name}"
    try:
        if entry.is_symlink():
            try:
                target = entry.resolve(strict=True)
                target.relative_to(context.root)
            except (OSError, RuntimeError, ValueError):
                catalog.add_problem(key, Problem(entry, "", "is a link leading outside the definitions folder "
                                                 "(or to nothing)", "replace the link by the definition itself"))
                return
        kind = kind_for(entry)
        if kind is None:
            if entry.is_dir():
                catalog.add_problem(key, Problem(entry, "Dockerfile", f"no {looked_for()} found",
                                                 "add a Dockerfile to the folder, or remove the folder"))
            else:
                catalog.add_problem(key, Problem(
                    entry, "", "is not a definition",
                    "definitions are folders with a Dockerfile, or <name>.def / <name>.yaml files"))
            return
        specs = kind.load(entry, context.arch, context)
    except OSError as exc:  # named by the file or folder that failed (a test folder, not the whole definition)
        catalog.add_problem(key, Problem(Path(exc.filename) if exc.filename else entry, "",
                                         f"cannot be read ({exc.strerror})",
                                         "make it readable for the CI's user, or remove it"))
        return
    for loaded in specs:
        spec = replace(loaded, builder=loaded.builder or kind.builder,
                       recipe_text=loaded.recipe_text or kind.recipe(loaded))
        other = catalog.images.get(spec.key)
        if other is not None:
            catalog.add_problem(definition_key(spec), Problem(
                spec.source, "variants" if spec.name != spec.definition else "",
                f"image name {shown(spec.name)} is also produced by {other.source}",
                "give the variant a different suffix or rename one of the definitions"))
            continue
        catalog.images[spec.key] = spec
