"""The Singularity kind: Apptainer definition files, `<arch>/<name>.def` (or `<arch>/<name>/<name>.def`).

Built by translating the file to a Dockerfile (`ci.spack.singularity.translate`), so it flows
through build, transfer, convert and test like any image. The image name is the file name in
lower case (`BLENDER_LUMI.def` -> `blender_lumi`: underscores stay, they are valid in our names);
the version is the `From:` tag. `%test` becomes a test job running `/.singularity.d/test`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ci.definitions.dockerfile import parse_from_references
from ci.definitions.files import FileRefused, checked, read_bytes, read_text
from ci.definitions.kinds.base import LoadContext
from ci.definitions.kinds.docker import FolderLoader
from ci.definitions.model import NAME_FIX, Catalog, ImageSpec, TestSpec, is_image_name
from ci.errors import DefinitionError, Problem
from ci.spack.singularity import FileCopy, parse_definition, translate
from ci.validation import shown

# The context of single-file definitions: sends nothing, and holds the job that runs %test
APPTAINER_CONTEXT = Path(__file__).resolve().parents[2] / "spack" / "apptainer-context"
TEST_SCRIPT = APPTAINER_CONTEXT / "tests" / "apptainer-test.sh"


def image_name(stem: str) -> str:
    """`BLENDER_LUMI` -> `blender_lumi`: lower case, nothing else changed."""
    return stem.lower()



def _exists(path: Path) -> bool:
    """Like os.path.lexists, but a folder that cannot be searched raises (discovery files it as a problem)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


class SingularityKind:
    """Apptainer/Singularity definition files, built through their Dockerfile translation."""

    name = "singularity"
    builder = "docker"
    looks_for = "<name>.def"
    recipe_file = "Dockerfile"

    def claims(self, entry: Path) -> bool:
        if entry.is_file():
            return entry.suffix == ".def"
        return entry.is_dir() and _exists(entry / f"{entry.name}.def") and \
            not os.path.lexists(entry / "Dockerfile")

    def load(self, entry: Path, arch: str, context: LoadContext) -> list[ImageSpec]:
        single = entry.is_file()
        stem = entry.stem if single else entry.name
        name = image_name(stem)
        key = f"{arch}/{name}"
        folder = entry.parent if single else entry
        source = entry if single else entry / f"{entry.name}.def"
        problems: list[Problem] = []
        if not is_image_name(name):
            problems.append(Problem(source, "", f"{shown(name)} is not a valid image name",
                                    f"rename the {'file' if single else 'folder'}: {NAME_FIX}"))
        try:
            text = read_text(source, folder, what=source.name)
        except FileRefused as exc:
            context.add(key, Problem(source, "", exc.message, exc.fix))
            return []
        definition, def_problems = parse_definition(source, folder, text)
        problems += def_problems
        meta_loader = None if single else FolderLoader(entry, arch, context)
        meta = meta_loader.metadata() if meta_loader is not None else None
        for problem in problems:
            context.add(key, problem)
        if definition is None or problems or (meta_loader is not None and not meta_loader.ok):
            return []
        if single:  # no folder of its own: the %files travel inside the recipe
            embedded = _embedded(definition.files, folder, source, context, key)
            if embedded is None:
                return []
            definition.files = embedded
        fallback = meta.version if meta is not None and "version" in meta.model_fields_set else None
        relative = source.relative_to(context.root).as_posix() if source.is_relative_to(context.root) else str(source)
        recipe = translate(definition, source=relative, name=name)
        tests: tuple[TestSpec, ...] = ()
        if single and definition.sections.get("test", "").strip():
            tests = (TestSpec(name="apptainer-test", script=TEST_SCRIPT),)
        elif meta_loader is not None and meta is not None:  # a folder: its tests/ and container.yaml, as Docker's
            tests = meta_loader.test_specs(meta.tests or []) if "tests" in meta.model_fields_set else \
                meta_loader.default_tests(meta_loader.tests_folder())
        spec = ImageSpec(
            name=name, definition=name, arch=arch, root=APPTAINER_CONTEXT if single else entry, source=source,
            dockerfile=source, fragments=(), version=definition.version(fallback),
            build_args=dict(meta.build_args) if meta is not None else {},
            platforms=tuple(meta.platforms) if meta is not None else (), files=(), tests=tests, kind=self.name,
            secrets=tuple(meta.secrets) if meta is not None else (), recipe_text=recipe,
        )
        return [replace(spec, from_references=tuple(parse_from_references(recipe, spec.build_args)))]

    def recipe(self, spec: ImageSpec) -> str:
        if spec.recipe_text:
            return spec.recipe_text
        raise DefinitionError([Problem(spec.source, "", "the recipe of a .def definition is made when it is loaded",
                                       "load the definitions again (inv plan)")])

    def on_demand(self, catalog: Catalog, options: Mapping[str, Any]) -> set[str]:
        return set()



def _embedded(files: list[FileCopy], folder: Path, source: Path, context: LoadContext,
              key: str) -> list[FileCopy] | None:
    """The %files of a single-file definition with their bytes (read fenced and size-capped), or None."""
    out: list[FileCopy] = []
    ok = True
    for index, pair in enumerate(files):
        what = shown(pair.source)
        try:
            data = read_bytes(checked(folder / pair.source, folder, what=what), what=what)
        except FileRefused as exc:
            ok = False
            context.add(key, Problem(source, f"%files[{index}]", exc.message,
                                     f"{exc.fix} (a folder needs the folder layout <arch>/<name>/<name>.def)"))
            continue
        out.append(FileCopy(pair.source, pair.target, data))
    return out if ok else None
