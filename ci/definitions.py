"""Find, parse and validate container definitions (DESIGN.md section 3).

The loader never stops at the first problem: it collects every problem of every definition so
a maintainer fixes them all in one pass, and the plan refuses to build while any selected
definition (or one of its parents) has a problem.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from ci.dockerfile import FromReference, parse_from_references
from ci.errors import DefinitionError, Problem
from ci.resources import Resources
from ci.resources import SlurmResources as SlurmResources  # the old name, for callers not moved yet
from ci.resources import is_valid_slurm_time as is_valid_slurm_time
from ci.validation import problems_from

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
KNOWN_ARCHES = ("amd64", "arm64")
CONTAINER_YAML = "container.yaml"
TESTS_FOLDER = "tests"



@dataclass(frozen=True)
class MetricCheck:
    """A ReFrame-style performance check: a number pulled from the output and its bounds."""

    name: str
    regex: str
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""


@dataclass(frozen=True)
class Expectation:
    """How a test is judged: never by the exit code alone when patterns or metrics are given."""

    exit_code: int = 0
    patterns: tuple[str, ...] = ()
    metrics: tuple[MetricCheck, ...] = ()


@dataclass(frozen=True)
class TestSpec:
    """One test script of an image, with where it runs and how it is judged."""

    __test__ = False  # not a pytest test class, despite its name

    name: str
    script: Path
    slurm: Resources = field(default_factory=Resources)
    expect: Expectation = Expectation()


@dataclass(frozen=True)
class FileCopy:
    """A Spacktainers-style `source:target` pair copied into the image."""

    source: str
    target: str


@dataclass(frozen=True)
class ImageSpec:
    """One image to build: a definition, or one variant of it, with everything resolved."""

    name: str
    definition: str
    arch: str
    root: Path
    source: Path
    dockerfile: Path
    fragments: tuple[Path, ...]
    version: str
    build_args: Mapping[str, str]
    platforms: tuple[str, ...]
    files: tuple[FileCopy, ...]
    tests: tuple[TestSpec, ...]
    from_references: tuple[FromReference, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.arch}/{self.name}"

    @property
    def platform(self) -> str:
        return self.platforms[0] if self.platforms else f"linux/{self.arch}"

    def composed_dockerfile(self) -> str:
        """The Dockerfile as built: fragments in order, the Dockerfile, then the `files` copies."""
        parts = [fragment.read_text(encoding="utf-8") for fragment in self.fragments]
        parts.append(self.dockerfile.read_text(encoding="utf-8"))
        text = "\n".join(part.rstrip("\n") for part in parts) + "\n"
        if self.files:
            text += "".join(f"COPY {copy.source} {copy.target}\n" for copy in self.files)
        return text


@dataclass(frozen=True)
class UnsupportedDefinition:
    """A definition this release recognises but cannot build yet (Singularity .def, Spack)."""

    name: str
    arch: str
    source: Path
    kind: str
    reason: str


@dataclass
class Catalog:
    """Everything found under a definitions root, valid or not."""

    root: Path
    images: dict[str, ImageSpec] = field(default_factory=dict)
    unsupported: list[UnsupportedDefinition] = field(default_factory=list)
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add_problem(self, key: str, problem: Problem) -> None:
        self.problems.setdefault(key, []).append(problem)

    def all_problems(self, keys: Iterable[str] | None = None) -> list[Problem]:
        wanted = self.problems.keys() if keys is None else keys
        return [problem for key in wanted for problem in self.problems.get(key, [])]

    def raise_for(self, keys: Iterable[str] | None = None) -> None:
        """Raise one DefinitionError with every problem of the given definitions (default: all)."""
        problems = self.all_problems(keys)
        if problems:
            raise DefinitionError(problems)


# --------------------------------------------------------------------------------------------
# container.yaml schema
# --------------------------------------------------------------------------------------------

_TOP_KEYS = ("version", "fragments", "build_args", "variants", "platforms", "files", "tests")
_VARIANT_KEYS = ("suffix", "build_args", "version", "platforms")
_TEST_KEYS = ("name", "script", "slurm", "expect")
_EXPECT_KEYS = ("exit_code", "patterns", "metrics")
_METRIC_KEYS = ("regex", "min", "max", "unit")
_PLATFORM = re.compile(r"^linux/(amd64|arm64)(/v\d+)?$")


class _Checker:
    """Collects problems for one definition file while reading its fields."""

    def __init__(self, catalog: Catalog, key: str, path: Path):
        self.catalog = catalog
        self.key = key
        self.path = path
        self.ok = True

    def problem(self, field_name: str, message: str, fix: str) -> None:
        self.ok = False
        self.catalog.add_problem(self.key, Problem(self.path, field_name, message, fix))

    def mapping(self, value: Any, field_name: str, allowed: Sequence[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(field_name or "(top level)", f"expected a mapping, got {_type_name(value)}",
                         f"write it as 'key: value' lines with the keys {', '.join(allowed)}")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
                self.problem(_join(field_name, str(key)), f"unknown key '{key}'", f"remove it or fix the name ({hint})")
        return {k: v for k, v in value.items() if k in allowed}

    def string(self, value: Any, field_name: str, *, allow_numbers: bool = True) -> str | None:
        if isinstance(value, bool) or value is None:
            self.problem(field_name, f"expected a string, got {_type_name(value)}", "write a quoted string")
            return None
        if isinstance(value, str):
            return value
        if allow_numbers and isinstance(value, int | float):
            return str(value)
        self.problem(field_name, f"expected a string, got {_type_name(value)}", "write a quoted string")
        return None

    def string_list(self, value: Any, field_name: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(field_name, f"expected a list of strings, got {_type_name(value)}",
                         "write a YAML list, e.g. [a, b]")
            return []
        out: list[str] = []
        for index, item in enumerate(value):
            text = self.string(item, f"{field_name}[{index}]", allow_numbers=False)
            if text is not None:
                out.append(text)
        return out

    def string_mapping(self, value: Any, field_name: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(field_name, f"expected a mapping of names to values, got {_type_name(value)}",
                         "write it as NAME: value lines")
            return {}
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                self.problem(_join(field_name, str(key)), "is not a valid build argument name",
                             "use letters, digits and underscores, not starting with a digit")
                continue
            if isinstance(item, dict | list) or item is None:
                self.problem(_join(field_name, key), f"expected a scalar value, got {_type_name(item)}",
                             "write a string or a number")
                continue
            out[key] = str(item).lower() if isinstance(item, bool) else str(item)
        return out

    def integer(self, value: Any, field_name: str, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(field_name, f"expected a whole number, got {_type_name(value)}",
                         f"write a whole number >= {minimum}")
            return None
        if value < minimum:
            self.problem(field_name, f"{value} is below the minimum {minimum}", f"use a number >= {minimum}")
            return None
        return value

    def number(self, value: Any, field_name: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(field_name, f"expected a number, got {_type_name(value)}", "write a number, e.g. 60 or 1.5")
            return None
        return float(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_catalog(root: Path, arches: Sequence[str] | None = None) -> Catalog:
    """Read every definition under `root` (optionally only some architectures).

    Problems are collected in the catalog instead of raised, so that the caller can decide
    which of them block the work at hand (see `Catalog.raise_for`).
    """
    root = root.resolve()
    catalog = Catalog(root=root)
    if not root.is_dir():
        catalog.add_problem("", Problem(root, "", "the definitions folder does not exist",
                                        "pass --definitions DIR or set ci.definitions in invoke.yaml"))
        return catalog
    wanted = list(arches) if arches else None
    for arch_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "common"):
        if arch_dir.name.startswith("."):
            continue
        if arch_dir.name not in KNOWN_ARCHES:
            catalog.add_problem(arch_dir.name, Problem(
                arch_dir, "", f"'{arch_dir.name}' is not an architecture folder",
                f"move definitions into one of {', '.join(KNOWN_ARCHES)}/ (or common/ for fragments)"))
            continue
        if wanted is not None and arch_dir.name not in wanted:
            continue
        for entry in sorted(arch_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            _load_entry(catalog, arch_dir.name, entry)
    _resolve_parents(catalog)
    return catalog


def _load_entry(catalog: Catalog, arch: str, entry: Path) -> None:
    if entry.is_file():
        suffix = entry.suffix
        name = entry.stem
        if suffix == ".def":
            _unsupported(catalog, arch, name, entry, "singularity",
                         "Singularity .def definitions are recognised but not built by this release")
        elif suffix in (".yaml", ".yml"):
            _unsupported(catalog, arch, name, entry, "spack",
                         "single-file Spack environments are recognised but not built by this release")
        else:
            catalog.add_problem(f"{arch}/{entry.name}", Problem(
                entry, "", "is not a definition",
                "definitions are folders with a Dockerfile, or <name>.def / <name>.yaml files"))
        return
    name = entry.name
    key = f"{arch}/{name}"
    dockerfile = entry / "Dockerfile"
    if not dockerfile.is_file():
        if (entry / "spack.yaml").is_file():
            _unsupported(catalog, arch, name, entry / "spack.yaml", "spack",
                         "Spack environment folders are recognised but not built by this release")
        elif (entry / f"{name}.def").is_file():
            _unsupported(catalog, arch, name, entry / f"{name}.def", "singularity",
                         "Singularity .def definitions are recognised but not built by this release")
        else:
            catalog.add_problem(key, Problem(entry, "Dockerfile", "no Dockerfile, spack.yaml or <name>.def found",
                                             "add a Dockerfile to the folder, or remove the folder"))
        return
    _load_docker_definition(catalog, arch, entry)


def _unsupported(catalog: Catalog, arch: str, name: str, source: Path, kind: str, reason: str) -> None:
    catalog.unsupported.append(UnsupportedDefinition(name=name, arch=arch, source=source, kind=kind, reason=reason))


def _read_metadata(check: _Checker, path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        check.problem("", f"is not valid YAML ({reason} at {where})", "fix the YAML syntax at that position")
        return {}
    return check.mapping(data, "", _TOP_KEYS)


_YamlLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_docker_definition(catalog: Catalog, arch: str, folder: Path) -> None:
    name = folder.name
    key = f"{arch}/{name}"
    metadata_path = folder / CONTAINER_YAML
    check = _Checker(catalog, key, metadata_path if metadata_path.is_file() else folder)
    if not NAME_PATTERN.match(name):
        check.problem("", f"'{name}' is not a valid image name",
                      "rename the folder to lower-case letters, digits, '.', '_' or '-', "
                      "starting with a letter or digit")
    meta = _read_metadata(check, metadata_path)

    version = check.string(meta["version"], "version") if "version" in meta else "latest"
    if version is not None and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", version):
        check.problem("version", f"'{version}' cannot be used in an image tag",
                      "use letters, digits, '.', '_' and '-' only")
    fragments = _fragments(check, catalog.root, meta.get("fragments"))
    build_args = check.string_mapping(meta.get("build_args"), "build_args")
    platforms = _platforms(check, meta.get("platforms"), "platforms", arch)
    files = _files(check, folder, meta.get("files"))
    tests = _tests(check, folder, meta)
    variants = _variants(check, meta.get("variants"), arch)

    if not check.ok:
        return
    assert version is not None
    base = ImageSpec(
        name=name, definition=name, arch=arch, root=folder, source=metadata_path if metadata_path.is_file() else
        folder / "Dockerfile", dockerfile=folder / "Dockerfile", fragments=tuple(fragments), version=version,
        build_args=build_args, platforms=tuple(platforms), files=tuple(files), tests=tuple(tests),
    )
    specs = [base] if not variants else [
        ImageSpec(
            name=f"{name}-{variant['suffix']}", definition=name, arch=arch, root=folder, source=base.source,
            dockerfile=base.dockerfile, fragments=base.fragments, version=variant.get("version") or version,
            build_args={**build_args, **variant.get("build_args", {})},
            platforms=tuple(variant.get("platforms") or platforms), files=base.files, tests=base.tests,
        )
        for variant in variants
    ]
    for spec in specs:
        image_key = spec.key
        if image_key in catalog.images:
            other = catalog.images[image_key]
            check.problem("variants" if variants else "",
                          f"image name '{spec.name}' is also produced by {other.source}",
                          "give the variant a different suffix or rename one of the definitions")
            continue
        try:
            text = spec.composed_dockerfile()
        except OSError as exc:
            check.problem("Dockerfile", f"cannot be read ({exc.strerror})", "check the file's permissions")
            continue
        refs = parse_from_references(text, spec.build_args)
        if not refs:
            check.problem("Dockerfile", "has no FROM instruction",
                          "start the Dockerfile (or its first fragment) with FROM")
            continue
        catalog.images[image_key] = ImageSpec(**{**spec.__dict__, "from_references": tuple(refs)})


def _fragments(check: _Checker, root: Path, value: Any) -> list[Path]:
    out: list[Path] = []
    for index, text in enumerate(check.string_list(value, "fragments")):
        field_name = f"fragments[{index}]"
        path = root / text
        if PurePosixPath(text).is_absolute() or not _inside(path, root):
            check.problem(field_name, f"'{text}' leaves the definitions folder",
                          "name a file under the definitions root, e.g. common/header.docker")
        elif not path.is_file():
            check.problem(field_name, f"fragment '{text}' does not exist",
                          f"create {path} or fix the path (relative to {root})")
        else:
            out.append(path)
    return out


def _platforms(check: _Checker, value: Any, field_name: str, arch: str) -> list[str]:
    platforms = check.string_list(value, field_name)
    for index, platform in enumerate(platforms):
        if not _PLATFORM.match(platform):
            check.problem(f"{field_name}[{index}]", f"'{platform}' is not a supported platform",
                          "use linux/amd64 or linux/arm64")
        elif platform.split("/")[1] != arch:
            check.problem(f"{field_name}[{index}]", f"'{platform}' does not match the '{arch}' folder",
                          f"use linux/{arch} or move the definition to the {platform.split('/')[1]}/ folder")
    return platforms


def _files(check: _Checker, folder: Path, value: Any) -> list[FileCopy]:
    out: list[FileCopy] = []
    for index, pair in enumerate(check.string_list(value, "files")):
        field_name = f"files[{index}]"
        source, sep, target = pair.partition(":")
        if not sep or not source or not target:
            check.problem(field_name, f"'{pair}' is not a source:target pair",
                          "write it as 'files/script.sh:/opt/script.sh'")
            continue
        if PurePosixPath(source).is_absolute() or not _inside(folder / source, folder):
            check.problem(field_name, f"source '{source}' leaves the definition folder",
                          f"put the file inside {folder} and name it relative to that folder")
            continue
        if not (folder / source).exists():
            check.problem(field_name, f"source '{source}' does not exist", f"create {folder / source} or fix the path")
            continue
        if not PurePosixPath(target).is_absolute():
            check.problem(field_name, f"target '{target}' is not an absolute path",
                          "write the target as /path/in/image")
            continue
        if PurePosixPath(source).parts[0] == TESTS_FOLDER:
            check.problem(field_name, f"source '{source}' is in tests/, which is not part of the build context",
                          "move the file out of tests/")
            continue
        out.append(FileCopy(source=source, target=target))
    return out


def _variants(check: _Checker, value: Any, arch: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        check.problem("variants", f"expected a list, got {_type_name(value)}",
                      "write one '- {suffix: ..., build_args: {...}}' entry per variant")
        return []
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        field_name = f"variants[{index}]"
        entry = check.mapping(item, field_name, _VARIANT_KEYS)
        if not isinstance(item, dict):
            continue
        suffix = check.string(entry.get("suffix"), f"{field_name}.suffix") if "suffix" in entry else None
        if suffix is None:
            if "suffix" not in entry:
                check.problem(f"{field_name}.suffix", "is missing", "give every variant a suffix, e.g. suffix: \"2.6\"")
            continue
        if not re.match(r"^[a-z0-9][a-z0-9._-]*$", suffix):
            check.problem(f"{field_name}.suffix", f"'{suffix}' cannot be part of an image name",
                          "use lower-case letters, digits, '.', '_' or '-'")
            continue
        if suffix in seen:
            check.problem(f"{field_name}.suffix", f"duplicate suffix '{suffix}' (also variants[{seen[suffix]}])",
                          "give each variant its own suffix")
            continue
        seen[suffix] = index
        variant: dict[str, Any] = {"suffix": suffix}
        variant["build_args"] = check.string_mapping(entry.get("build_args"), f"{field_name}.build_args")
        if "version" in entry:
            variant["version"] = check.string(entry["version"], f"{field_name}.version")
        if "platforms" in entry:
            variant["platforms"] = _platforms(check, entry["platforms"], f"{field_name}.platforms", arch)
        out.append(variant)
    return out


def _tests(check: _Checker, folder: Path, meta: Mapping[str, Any]) -> list[TestSpec]:
    if "tests" not in meta:
        scripts = sorted((folder / TESTS_FOLDER).glob("*.sh"))
        return [TestSpec(name=script.stem, script=script) for script in scripts]
    value = meta["tests"]
    if value is None:
        return []
    if not isinstance(value, list):
        check.problem("tests", f"expected a list, got {_type_name(value)}",
                      "write one '- name: ..., script: ...' entry per test")
        return []
    out: list[TestSpec] = []
    names: set[str] = set()
    for index, item in enumerate(value):
        field_name = f"tests[{index}]"
        entry = check.mapping(item, field_name, _TEST_KEYS)
        if not isinstance(item, dict):
            continue
        script_text = check.string(entry.get("script"), f"{field_name}.script", allow_numbers=False) \
            if "script" in entry else None
        if "script" not in entry:
            check.problem(f"{field_name}.script", "is missing", "name the test script, e.g. script: tests/run.sh")
            continue
        if script_text is None:
            continue
        script = folder / script_text
        if PurePosixPath(script_text).is_absolute() or not _inside(script, folder):
            check.problem(f"{field_name}.script", f"'{script_text}' leaves the definition folder",
                          "name a script inside the definition folder, e.g. tests/run.sh")
            continue
        if not script.is_file():
            check.problem(f"{field_name}.script", f"test script '{script_text}' does not exist",
                          f"create {script} or fix the path")
            continue
        name = check.string(entry["name"], f"{field_name}.name") if "name" in entry else script.stem
        if name is None:
            continue
        if not NAME_PATTERN.match(name):
            check.problem(f"{field_name}.name", f"'{name}' is not a valid test name",
                          "use lower-case letters, digits, '.', '_' or '-'")
            continue
        if name in names:
            check.problem(f"{field_name}.name", f"duplicate test name '{name}'", "give each test its own name")
            continue
        names.add(name)
        slurm = _slurm(check, entry.get("slurm"), f"{field_name}.slurm")
        expect = _expect(check, entry.get("expect"), f"{field_name}.expect")
        if slurm is not None and expect is not None:
            out.append(TestSpec(name=name, script=script, slurm=slurm, expect=expect))
    return out


def _slurm(check: _Checker, value: Any, field_name: str) -> Resources | None:
    if value is None:
        return Resources()
    try:
        return Resources.model_validate(value)
    except ValidationError as exc:
        for problem in problems_from(exc, file=check.path, prefix=field_name, model=Resources):
            check.problem(problem.field, problem.message, problem.fix)
        return None


def _expect(check: _Checker, value: Any, field_name: str) -> Expectation | None:
    entry = check.mapping(value, field_name, _EXPECT_KEYS)
    exit_code = check.integer(entry.get("exit_code", 0), f"{field_name}.exit_code", 0)
    patterns = check.string_list(entry.get("patterns"), f"{field_name}.patterns")
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            check.problem(f"{field_name}.patterns[{index}]", f"'{pattern}' is not a valid regular expression ({exc})",
                          "fix the expression or escape special characters with a backslash")
    metrics: list[MetricCheck] = []
    raw_metrics = entry.get("metrics")
    if raw_metrics is not None and not isinstance(raw_metrics, dict):
        check.problem(f"{field_name}.metrics", f"expected a mapping, got {_type_name(raw_metrics)}",
                      "write metrics as 'name: {regex: ..., min: ..., unit: ...}' entries")
    elif raw_metrics:
        for metric_name, spec in raw_metrics.items():
            metric = _metric(check, str(metric_name), spec, f"{field_name}.metrics.{metric_name}")
            if metric is not None:
                metrics.append(metric)
    if exit_code is None or not check.ok:
        return None
    return Expectation(exit_code=exit_code, patterns=tuple(patterns), metrics=tuple(metrics))


def _metric(check: _Checker, name: str, value: Any, field_name: str) -> MetricCheck | None:
    if not isinstance(value, dict):
        check.problem(field_name, f"expected a mapping, got {_type_name(value)}",
                      "write {regex: 'value\\s+([0-9.]+)', min: 1, unit: GB/s}")
        return None
    entry = check.mapping(value, field_name, _METRIC_KEYS)
    if "regex" not in entry:
        check.problem(f"{field_name}.regex", "is missing",
                      "give a regular expression with one group capturing the number")
        return None
    regex = check.string(entry["regex"], f"{field_name}.regex", allow_numbers=False)
    if regex is None:
        return None
    try:
        groups = re.compile(regex).groups
    except re.error as exc:
        check.problem(f"{field_name}.regex", f"is not a valid regular expression ({exc})", "fix the expression")
        return None
    if groups != 1:
        check.problem(f"{field_name}.regex", f"has {groups} capture groups", "use exactly one group around the number")
        return None
    minimum = check.number(entry["min"], f"{field_name}.min") if "min" in entry else None
    maximum = check.number(entry["max"], f"{field_name}.max") if "max" in entry else None
    if "min" not in entry and "max" not in entry:
        check.problem(field_name, "has neither min nor max", "give a lower bound (min) or an upper bound (max)")
        return None
    if minimum is not None and maximum is not None and minimum > maximum:
        check.problem(field_name, f"min {minimum} is above max {maximum}", "swap or fix the bounds")
        return None
    unit = check.string(entry.get("unit", ""), f"{field_name}.unit") or ""
    return MetricCheck(name=name, regex=regex, minimum=minimum, maximum=maximum, unit=unit)


# --------------------------------------------------------------------------------------------
# FROM edges
# --------------------------------------------------------------------------------------------


def _resolve_parents(catalog: Catalog) -> None:
    """Turn FROM references that name another definition into DAG edges; report cycles."""
    by_definition: dict[tuple[str, str], list[str]] = {}
    for spec in catalog.images.values():
        by_definition.setdefault((spec.arch, spec.definition), []).append(spec.name)
    for key, spec in catalog.images.items():
        parents: list[str] = []
        owner = definition_key(spec)
        for ref in spec.from_references:
            if ref.stage_alias:
                continue
            candidate = f"{spec.arch}/{ref.repository}"
            if candidate == key:
                catalog.add_problem(owner, Problem(spec.dockerfile, "FROM", f"'{spec.name}' is built FROM itself",
                                                   "name a different base image"))
            elif candidate in catalog.images:
                if candidate not in parents:
                    parents.append(candidate)
            elif (spec.arch, ref.repository) in by_definition:
                names = by_definition[(spec.arch, ref.repository)]
                catalog.add_problem(owner, Problem(
                    spec.dockerfile, "FROM", f"'{ref.repository}' has variants and names no single image",
                    f"name one of: {', '.join(names)}"))
            elif candidate in catalog.problems:
                catalog.add_problem(owner, Problem(
                    spec.dockerfile, "FROM", f"its parent '{ref.repository}' is invalid",
                    "fix the parent definition first (its problems are listed with it)"))
        catalog.parents[key] = tuple(parents)
    _report_cycles(catalog)


def _report_cycles(catalog: Catalog) -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for parent in catalog.parents.get(node, ()):
            if state.get(parent) == 1:
                cycle = [*stack[stack.index(parent):], parent]
                names = " -> ".join(k.split("/", 1)[1] for k in cycle)
                for member in cycle[:-1]:
                    spec = catalog.images[member]
                    catalog.add_problem(definition_key(spec), Problem(spec.dockerfile, "FROM", f"FROM cycle: {names}",
                                                        "break the cycle by building one of them FROM an outside base"))
            elif state.get(parent, 0) == 0:
                visit(parent)
        stack.pop()
        state[node] = 2

    for node in sorted(catalog.parents):
        if state.get(node, 0) == 0:
            visit(node)


def definition_key(spec: ImageSpec) -> str:
    """The key problems are filed under: the definition, shared by all of its variants."""
    return f"{spec.arch}/{spec.definition}"


def ancestors(catalog: Catalog, keys: Iterable[str]) -> set[str]:
    """Every image the given ones are built on, transitively (not including themselves)."""
    seen: set[str] = set()
    todo = [p for key in keys for p in catalog.parents.get(key, ())]
    while todo:
        key = todo.pop()
        if key not in seen:
            seen.add(key)
            todo.extend(catalog.parents.get(key, ()))
    return seen
