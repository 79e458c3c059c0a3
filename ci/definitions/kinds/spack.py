"""The Spack kind: Spacktainers-style environments, `<arch>/<name>.yaml` or `<arch>/<name>/spack.yaml`.

A folder may also hold `Dockerfile.epilogue` (appended to the generated Dockerfile),
`container.yaml` (version, tests, platforms, secrets, files), `tests/` and `files/`. The recipe is
the multi-stage Dockerfile rendered by `ci.spack` from the definition merged into the site
template (`ci.spack`); it carries the merged spack.yaml itself, so a single-file definition needs
no build context, and the digest covers the recipe, the folder's files and the builder image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ci.config.spack import SpackSettings, spack_settings
from ci.definitions.dockerfile import parse_from_references
from ci.definitions.files import FileRefused, read_text, read_yaml_source
from ci.definitions.kinds.base import LoadContext
from ci.definitions.kinds.docker import FolderLoader
from ci.definitions.model import NAME_FIX, Catalog, FileCopy, ImageSpec, is_image_name
from ci.errors import ConfigError, DefinitionError, Problem
from ci.spack.builders import on_demand as builders_on_demand
from ci.spack.environment import FilePair, merged_environment, parse_environment_data, spack_version
from ci.spack.render import Pair, render_dockerfile
from ci.validation import shown

SPACK_YAML = "spack.yaml"
EPILOGUE = "Dockerfile.epilogue"
EMPTY_CONTEXT = Path(__file__).resolve().parents[2] / "spack" / "empty-context"


def settings_of(context: LoadContext, key: str) -> SpackSettings | None:
    """`ci.spack` as the catalog was loaded with (the defaults without one); a bad section is a problem."""
    try:
        given = context.options.get("spack")
        return given if isinstance(given, SpackSettings) else spack_settings(given)
    except ConfigError as exc:
        context.problem(key, Path("invoke.yaml"), "ci.spack", str(exc), "fix the ci.spack section")
        return None


def builder_identity(settings: SpackSettings) -> str:
    """The builder image as the recipe's header names it.

    A builder that is a definition (the bundled `spack-builder`) is a parent in the graph, so its
    digest is in every dependent's digest. An image made elsewhere is identified by its reference:
    pin it by digest (`image@sha256:...`) for an exact identity.
    """
    return settings.builder_image


def _exists(path: Path) -> bool:
    """Like os.path.lexists, but a folder that cannot be searched raises (discovery files it as a problem)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def files_context(pairs: list[FilePair]) -> tuple[Path, list[Pair]]:
    """The deepest folder holding every source, and the pairs with sources relative to it."""
    paths = [Path(pair.base) / pair.source for pair in pairs]
    common = Path(os.path.commonpath([path.parent if path.is_file() or not path.is_dir() else path
                                      for path in paths]))
    if any(path == common for path in paths):  # a folder source is copied whole: its parent holds it
        common = common.parent
    return common, [FileCopy(path.relative_to(common).as_posix(), pair.target) for path, pair in zip(paths, pairs,
                                                                                                      strict=True)]


class SpackKind:
    """Spack environments built with Spack in a builder stage, shipped in a plain runtime stage."""

    name = "spack"
    builder = "docker"
    looks_for = SPACK_YAML
    recipe_file = "Dockerfile"

    def claims(self, entry: Path) -> bool:
        if entry.is_file():
            return entry.suffix in (".yaml", ".yml")
        return entry.is_dir() and _exists(entry / SPACK_YAML) and not os.path.lexists(entry / "Dockerfile")

    def load(self, entry: Path, arch: str, context: LoadContext) -> list[ImageSpec]:
        single = entry.is_file()
        name = entry.stem if single else entry.name
        key = f"{arch}/{name}"
        folder = entry.parent if single else entry
        source = entry if single else entry / SPACK_YAML
        problems: list[Problem] = []
        if not is_image_name(name):
            problems.append(Problem(source, "", f"{shown(name)} is not a valid image name",
                                    f"rename the {'file' if single else 'folder'}: {NAME_FIX}"))
        settings = settings_of(context, key)
        try:
            data, written = read_yaml_source(source, folder, what=source.name)
        except FileRefused as exc:
            context.add(key, Problem(source, "", exc.message, exc.fix))
            return []
        files_roots = [(context.root / settings.files_root).resolve()] if settings is not None else []
        env, env_problems = parse_environment_data(data, source, folder, [r for r in files_roots if r.is_dir()],
                                                   source=written)
        problems += env_problems
        meta_loader = None if single else FolderLoader(entry, arch, context)
        meta = meta_loader.metadata() if meta_loader is not None else None
        tests_found = meta_loader.tests_folder() if meta_loader is not None else []
        epilogue = ""
        if not single and os.path.lexists(entry / EPILOGUE):
            try:
                epilogue = read_text(entry / EPILOGUE, entry, what=EPILOGUE)
            except FileRefused as exc:
                problems.append(Problem(entry / EPILOGUE, "", exc.message, exc.fix))
        if meta is not None and meta.variants:
            problems.append(Problem(entry / "container.yaml", "variants", "Spack definitions have no variants",
                                    "write one definition per environment"))
        for problem in problems:
            context.add(key, problem)
        if problems or env is None or settings is None or (meta_loader is not None and not meta_loader.ok):
            return []
        merged, merge_problems = merged_environment(env, settings, arch)
        version, version_problems = spack_version(env, meta.version if meta is not None and
                                                  "version" in meta.model_fields_set else None)
        for problem in [*merge_problems, *version_problems]:
            context.add(key, problem)
        if merged is None or merge_problems or version_problems:
            return []
        files: list[Pair] = [*env.files, *(FileCopy(*pair.split(":", 1)) for pair in (meta.files if meta else []))]
        # a single file's sources live beside it: then the architecture folder is the build context
        root = (folder if files else EMPTY_CONTEXT) if single else entry
        elsewhere = [pair for pair in env.files if pair.base]
        if elsewhere:  # Spacktainers' spacktainer/files/<name>/...: the context is their common folder
            if len(elsewhere) != len(files):
                context.add(key, Problem(source, "spacktainer.files", "takes sources from both the definition "
                                         f"folder and {elsewhere[0].base}", "keep one definition's files in one "
                                         "of the two places"))
                return []
            root, files = files_context(elsewhere)
        tests: tuple[Any, ...] = ()
        if meta_loader is not None and meta is not None:
            tests = meta_loader.test_specs(meta.tests or []) if "tests" in meta.model_fields_set else \
                meta_loader.default_tests(tests_found)
        relative = source.relative_to(context.root).as_posix() if source.is_relative_to(context.root) else str(source)
        recipe = render_dockerfile(merged, settings, name=name, arch=arch, source=relative,
                                   files=files, epilogue=epilogue,
                                   builder_identity=builder_identity(settings))
        spec = ImageSpec(
            name=name, definition=name, arch=arch, root=root, source=source, dockerfile=source, fragments=(),
            version=version, build_args=dict(meta.build_args) if meta is not None else {},
            platforms=tuple(meta.platforms) if meta is not None else (), files=(), tests=tests, kind=self.name,
            secrets=tuple(dict.fromkeys([*settings.build_secrets(), *(meta.secrets if meta is not None else [])])),
            recipe_text=recipe,
        )
        return [replace(spec, from_references=tuple(parse_from_references(recipe, spec.build_args)))]

    def recipe(self, spec: ImageSpec) -> str:
        if spec.recipe_text:
            return spec.recipe_text
        raise DefinitionError([Problem(spec.source, "", "the recipe of a Spack definition is made when it is loaded",
                                       "load the definitions again (inv plan)")])

    def on_demand(self, catalog: Catalog, options: Mapping[str, Any]) -> set[str]:
        """The builder definitions (ci.spack.builders): parents of Spack images, not images of their own."""
        return builders_on_demand(catalog, options.get("spack"))
