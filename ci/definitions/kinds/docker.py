"""The Docker kind: a folder with a Dockerfile (or another body named by `dockerfile:`) and container.yaml.

The recipe is the composed Dockerfile: with `compose:`, the listed fragments and the body
(`$DOCKERFILE`) joined byte for byte, as `cat a b c > tmp` does; otherwise the `fragments:` before
the body, joined by lines; then one `COPY` line per `files:` pair. It is read once, when the
definition is loaded, and the spec carries it, so the digest hashes exactly what the build gets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ci.definitions.dockerfile import parse_from_references
from ci.definitions.files import FileRefused, read_text, read_yaml_source, scan_tree
from ci.definitions.kinds.base import LoadContext
from ci.definitions.model import (
    CONTAINER_YAML,
    MAX_NAME,
    NAME_FIX,
    TEST_NAME_FIX,
    TEST_NAME_PATTERN,
    TESTS_FOLDER,
    Catalog,
    Expectation,
    FileCopy,
    ImageSpec,
    MetricCheck,
    TestSpec,
    is_image_name,
)
from ci.definitions.schema import (
    DOCKERFILE_PLACEHOLDER,
    ContainerYaml,
    Test,
    Variant,
    cross_problems,
    name_of,
    secret_looking_args,
)
from ci.errors import DefinitionError, Problem
from ci.validation import shown, validate

DOCKERFILE = "Dockerfile"


class DockerKind:
    """Dockerfile folders, built by Docker (BuildKit where available)."""

    name = "docker"
    builder = "docker"
    looks_for = DOCKERFILE
    recipe_file = DOCKERFILE

    def claims(self, entry: Path) -> bool:
        return entry.is_dir() and (os.path.lexists(entry / DOCKERFILE) or os.path.lexists(entry / CONTAINER_YAML))

    def load(self, entry: Path, arch: str, context: LoadContext) -> list[ImageSpec]:
        return FolderLoader(entry, arch, context).load()

    def recipe(self, spec: ImageSpec) -> str:
        """The composed Dockerfile, read again from the files (for specs made without a loaded recipe)."""
        try:
            return compose_recipe(spec, {})
        except FileRefused as exc:
            raise DefinitionError([Problem(spec.dockerfile, "", exc.message, exc.fix)]) from None

    def on_demand(self, catalog: Catalog, options: Mapping[str, Any]) -> set[str]:
        return set()


def compose_recipe(spec: ImageSpec, cache: dict[Path, str]) -> str:
    """The Dockerfile exactly as built, from the spec's composition (each part read once into `cache`)."""
    return _join(spec, [read_part(spec, part, cache) for part in (spec.compose or (*spec.fragments, spec.dockerfile))])


def read_part(spec: ImageSpec, path: Path, cache: dict[Path, str]) -> str:
    """One part of a composition: the body (fenced in the definition folder) or a fragment (in the root)."""
    if path == spec.dockerfile:
        if path not in cache:
            cache[path] = read_text(path, spec.root, what=shown(path.name))
        return cache[path]
    root = _definitions_root(spec)
    key = path.resolve()
    if key not in cache:
        cache[key] = read_text(path, root, what=shown(_relative(path, root)), fence_name="the definitions folder")
    return cache[key]


def _join(spec: ImageSpec, parts: list[str]) -> str:
    if spec.compose:
        recipe = "".join(parts)  # byte for byte, as `cat a b c > tmp` joins them
        if spec.files and recipe and not recipe.endswith("\n"):
            recipe += "\n"
    else:
        recipe = "\n".join(part.rstrip("\n") for part in parts) + "\n"
    return recipe + "".join(f"COPY {copy.source} {copy.target}\n" for copy in spec.files)


def _definitions_root(spec: ImageSpec) -> Path:
    """The definitions root: the parent of the architecture folder holding the definition."""
    return spec.root.parent.parent


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


class FolderLoader:
    """One Docker definition folder into image specs; every problem goes to the context.

    The Spack and Singularity kinds reuse its reading of `container.yaml` and `tests/`
    (`metadata`, `tests_folder`, `default_tests`, `test_specs`), so every kind checks them alike.
    """

    def __init__(self, folder: Path, arch: str, context: LoadContext):
        self.folder = folder
        self.arch = arch
        self.context = context
        self.name = folder.name
        self.key = f"{arch}/{folder.name}"
        self.metadata_path = folder / CONTAINER_YAML
        self.has_metadata = os.path.lexists(self.metadata_path)
        self.where = self.metadata_path if self.has_metadata else folder
        self.ok = True

    def problem(self, field: str, message: str, fix: str, path: Path | None = None) -> None:
        self.ok = False
        self.context.problem(self.key, path or self.where, field, message, fix)

    def load(self) -> list[ImageSpec]:
        if not is_image_name(self.name):
            self.problem("", f"{shown(self.name)} is not a valid image name", f"rename the folder: {NAME_FIX}")
        meta = self.metadata()
        tests_found = self.tests_folder()
        if meta is None or not self.ok:
            return []
        for problem in cross_problems(meta, self.metadata_path):
            self.problem(problem.field, problem.message, problem.fix)
        for name in secret_looking_args(meta):
            self.context.warn(self.metadata_path, f"build_args.{name}",
                              f"build argument {name} looks like a secret; build arguments are kept in the "
                              "image's history", f"list it under secrets: and read it with "
                              f"RUN --mount=type=secret,id={name}")
        default_tests = self.default_tests(tests_found) if meta.tests is None and "tests" not in \
            meta.model_fields_set else ()
        if not self.ok:
            return []
        variants: list[Variant | None] = list(meta.variants) or [None]
        specs = []
        for index, variant in enumerate(variants):
            spec = self._spec(meta, variant, index, default_tests)
            if spec is not None:
                specs.append(spec)
        return specs if self.ok else []

    def metadata(self) -> ContainerYaml | None:
        if not self.has_metadata:
            return ContainerYaml()
        try:
            data, source = read_yaml_source(self.metadata_path, self.folder, what=CONTAINER_YAML)
        except FileRefused as exc:
            self.problem("", exc.message, exc.fix)
            return None
        if data is None:
            data = {}
        meta, problems = validate(ContainerYaml, data, file=self.metadata_path, source=source,
                                  context={"arch": self.arch, "folder": self.folder, "root": self.context.root})
        for problem in problems:
            self.problem(problem.field, problem.message, problem.fix)
        return meta

    def tests_folder(self) -> list[str]:
        """The test folder's files (relative names); links leaving the folder and special files are problems."""
        tests = self.folder / TESTS_FOLDER
        if not os.path.lexists(tests):
            return []
        if tests.is_symlink() or not tests.is_dir():
            self.problem(TESTS_FOLDER, "tests is a link or not a folder", "make tests/ a plain folder inside the "
                         "definition folder")
            return []
        found, refused = scan_tree(tests, self.folder)
        for refusal in refused:
            self.problem(TESTS_FOLDER, refusal.message, refusal.fix)
        return [entry.relative for entry in found]

    def default_tests(self, files: list[str]) -> tuple[TestSpec, ...]:
        out = []
        for relative in files:
            if "/" in relative or not relative.endswith(".sh"):
                continue
            name = relative.removesuffix(".sh")
            if not TEST_NAME_PATTERN.match(name):
                self.problem(TESTS_FOLDER, f"{shown(name)} (from tests/{shown(relative)[1:-1]}) is not a valid test "
                             "name", f"rename the script: {TEST_NAME_FIX}")
                continue
            out.append(TestSpec(name=name, script=self.folder / TESTS_FOLDER / relative))
        return tuple(out)

    def test_specs(self, tests: list[Test]) -> tuple[TestSpec, ...]:
        return tuple(
            TestSpec(name=name_of(test), script=self.folder / test.script, slurm=test.slurm, run=test.run,
                     expect=Expectation(
                         exit_code=test.expect.exit_code, patterns=tuple(test.expect.patterns),
                         metrics=tuple(MetricCheck(name=name, regex=metric.regex, minimum=metric.min,
                                                   maximum=metric.max, unit=metric.unit)
                                       for name, metric in test.expect.metrics.items())))
            for test in tests)

    def _spec(self, meta: ContainerYaml, variant: Variant | None, index: int,
              default_tests: tuple[TestSpec, ...]) -> ImageSpec | None:
        prefix = f"variants[{index}]." if variant is not None else ""
        body_name = (variant.dockerfile if variant is not None else None) or meta.dockerfile
        body_field = f"{prefix}dockerfile" if variant is not None and variant.dockerfile else \
            ("dockerfile" if meta.dockerfile else DOCKERFILE)
        body = self.folder / (body_name or DOCKERFILE)
        if body_name is None and not os.path.lexists(body):
            self.problem(DOCKERFILE, f"no {self.context.looked_for} found",
                         "add a Dockerfile to the folder, or remove the folder")
            return None
        own_compose = variant is not None and variant.compose is not None
        compose_entries = variant.compose if variant is not None and variant.compose is not None else meta.compose
        compose_field = f"{prefix}compose" if own_compose else "compose"
        compose: tuple[Path, ...] = ()
        fragments: tuple[Path, ...] = ()
        if compose_entries is not None:
            compose = tuple(body if entry == DOCKERFILE_PLACEHOLDER else self.context.root / entry
                            for entry in compose_entries)
        else:
            fragments = tuple(self.context.root / entry for entry in meta.fragments)
        if variant is not None and "tests" in variant.model_fields_set:
            tests = self.test_specs(variant.tests or [])
        elif "tests" in meta.model_fields_set:
            tests = self.test_specs(meta.tests or [])
        else:
            tests = default_tests
        build_args = dict(meta.build_args)
        if variant is not None:
            build_args.update(variant.build_args)
        platforms = variant.platforms if variant is not None and variant.platforms is not None else meta.platforms
        name = self.name if variant is None else f"{self.name}-{variant.suffix}"
        if len(name) > MAX_NAME:
            self.problem(f"{prefix}suffix", f"the image name {shown(name, 40)} is {len(name)} characters long "
                         f"(at most {MAX_NAME})", "shorten the suffix or the folder name")
            return None
        spec = ImageSpec(
            name=name,
            definition=self.name, arch=self.arch, root=self.folder,
            source=self.metadata_path if self.has_metadata else self.folder / DOCKERFILE,
            dockerfile=body, fragments=fragments, compose=compose,
            version=(variant.version if variant is not None and variant.version else None) or meta.version,
            build_args=build_args, platforms=tuple(platforms), secrets=tuple(meta.secrets),
            files=tuple(FileCopy(*pair.split(":", 1)) for pair in meta.files), tests=tests,
        )
        if spec.compose:
            fields = [body_field if part == body else f"{compose_field}[{i}]" for i, part in enumerate(spec.compose)]
        else:
            fields = [f"fragments[{i}]" for i in range(len(spec.fragments))] + [body_field]
        parts = []
        for part, field in zip(spec.compose or (*spec.fragments, body), fields, strict=True):
            try:
                parts.append(read_part(spec, part, self.context.texts))
            except FileRefused as exc:
                self.problem(field, exc.message, exc.fix, path=body if field == DOCKERFILE else None)
        if len(parts) != len(fields):
            return None
        recipe = _join(spec, parts)
        refs = parse_from_references(recipe, build_args)
        if not refs:
            self.problem(DOCKERFILE, "has no FROM instruction",
                         "start the Dockerfile (or its first fragment) with FROM", path=body)
            return None
        return replace(spec, from_references=tuple(refs), recipe_text=recipe)
