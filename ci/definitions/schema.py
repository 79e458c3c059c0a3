"""The schema of container.yaml: pydantic v2 models, the only place its rules are written.

Grammar and per-value rules (names, versions, platforms, paths inside the definition folder)
are validators on the models, so that one `model_validate` reports every problem of one file and
`problems_from` words them. Rules across entries (duplicate suffixes or test names) are checked on
the validated model by `cross_problems`. The JSON Schema in schemas/container.schema.json is
exported from these models (`python -m ci.definitions schema --write`), so editors check the same
shape as we do.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from ci.definitions.context import ALWAYS_EXCLUDED, ContextError, ignore_rules, is_ignored
from ci.definitions.files import FileRefused, checked, require_readable
from ci.definitions.model import (
    MAX_NAME,
    MAX_TEST_NAME,
    MAX_VERSION,
    NAME_FIX,
    NAME_PATTERN,
    TEST_NAME_FIX,
    TEST_NAME_PATTERN,
    TESTS_FOLDER,
    VERSION_PATTERN,
)
from ci.errors import Problem
from ci.resources import Resources
from ci.validation import (
    SECRET_NAME,
    check_text,
    has_control,
    invalid,
    not_a_secret_build_arg,
    not_text,
    shown,
    type_name,
)

DOCKERFILE_PLACEHOLDER = "$DOCKERFILE"
SCHEMA_FILE = Path(__file__).resolve().parent.parent.parent / "schemas" / "container.schema.json"
SCHEMA_ID = "https://containers-ci.invalid/schemas/container.schema.json"

_ARG_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# A build argument named as a secret is refused (ci.validation.SECRET_NAME); names that only look like one
# (`*CREDENTIALS*`, `PRIVATE*`) are warned about (`secret_looking_args`).
_ENV_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_PLATFORM = re.compile(r"\Alinux/(amd64|arm64)(/v[0-9])?\Z")
# Paths that become Dockerfile words (COPY source target): no spaces, quotes, `$` or globbing.
_PATH_WORD = re.compile(r"\A[A-Za-z0-9_./+@%,=-]{1,1024}\Z")
_PATH_FIX = "use letters, digits and . _ / + @ % , = - only (no spaces, quotes or $)"
_MAX_VALUE = 4096
_MAX_PATTERN = 1000


def _context(info: ValidationInfo, name: str) -> Any:
    return (info.context or {}).get(name)


# -- scalar grammars -------------------------------------------------------------------------------


def _version(value: str) -> str:
    check_text(value, what="version", max_length=MAX_VERSION)
    if not VERSION_PATTERN.match(value):
        raise invalid(f"{shown(value)} cannot be used in an image tag",
                      "use letters, digits, '.', '_' and '-' only, starting with a letter, digit or '_'")
    return value


def _suffix(value: str) -> str:
    check_text(value, what="suffix", max_length=MAX_NAME)
    if not NAME_PATTERN.match(value):
        raise invalid(f"{shown(value)} cannot be part of an image name", NAME_FIX)
    return value


def _test_name(value: str) -> str:
    check_text(value, what="test name", max_length=MAX_TEST_NAME, fix=TEST_NAME_FIX)
    if not TEST_NAME_PATTERN.match(value):
        raise invalid(f"{shown(value)} is not a valid test name", TEST_NAME_FIX)
    return value


def _arg_name(value: Any) -> str:
    if not isinstance(value, str) or not _ARG_NAME.match(value):
        raise invalid("is not a valid build argument name",
                      "use letters, digits and underscores, not starting with a digit (at most 128 characters)")
    return not_a_secret_build_arg(value, f"list {value} under secrets: and read it with RUN "
                                  f"--mount=type=secret,id={value} (or, if it is no secret, rename it)")


def _arg_value(value: Any) -> str:
    if isinstance(value, dict | list) or value is None:
        raise invalid(f"expected a scalar value, got {type_name(value)}", "write a quoted string")
    if not isinstance(value, str):
        raise not_text(value)  # a build argument is text: `2.10` would reach the build as "2.1", `yes` as "true"
    text = value
    if has_control(text):
        raise invalid(f"{shown(text)} contains a control character", "write the value on one line, without "
                      "control characters")
    if len(text) > _MAX_VALUE:
        raise invalid(f"is {len(text)} characters long (at most {_MAX_VALUE})", "shorten the value")
    return text


def _build_args(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"expected a mapping of names to values, got {type_name(value)}", "write it as NAME: value lines")
    return value


def _secret(value: str) -> str:
    check_text(value, what="secret name", max_length=128)
    if not _ENV_NAME.match(value):
        raise invalid(f"{shown(value)} is not an environment variable name",
                      "use letters, digits and underscores, not starting with a digit")
    return value


def _string_list(value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"expected a list of strings, got {type_name(value)}", "write a YAML list, e.g. [a, b]")
    return value


def _platform(value: str, info: ValidationInfo) -> str:
    check_text(value, what="platform", max_length=32, fix="use linux/amd64 or linux/arm64")
    if not _PLATFORM.match(value):
        raise invalid(f"{shown(value)} is not a supported platform", "use linux/amd64 or linux/arm64")
    arch = _context(info, "arch")
    platform_arch = value.split("/")[1]
    if arch and platform_arch != arch:
        raise invalid(f"{shown(value)} does not match the '{arch}' folder",
                      f"use linux/{arch} or move the definition to the {platform_arch}/ folder")
    return value


def _relative_path(text: str) -> str:
    check_text(text, what="path", max_length=1024)
    if not _PATH_WORD.match(text):
        raise invalid(f"{shown(text)} is not a usable path", _PATH_FIX)
    return text


def _in_folder(text: str, info: ValidationInfo, *, what: str) -> str:
    """A path relative to the definition folder, inside it (links resolved), a regular file."""
    folder = _context(info, "folder")
    if PurePosixPath(text).is_absolute() or ".." in PurePosixPath(text).parts:
        raise invalid(f"{shown(text)} leaves the definition folder", f"name {what} inside the definition folder")
    if folder is not None:
        try:
            checked(folder / text, folder, what=f"{what} {shown(text)}")
        except FileRefused as exc:
            raise invalid(exc.message, exc.fix) from None
    return text


def _body(text: str, info: ValidationInfo) -> str:
    return _in_folder(_relative_path(text), info, what="the Dockerfile")


def _fragment(text: str, info: ValidationInfo) -> str:
    _relative_path(text)
    root = _context(info, "root")
    if PurePosixPath(text).is_absolute() or ".." in PurePosixPath(text).parts:
        raise invalid(f"{shown(text)} leaves the definitions folder",
                      "name a file under the definitions root, e.g. common/header.docker")
    if root is not None:
        if not (root / text).exists() and not (root / text).is_symlink():
            raise invalid(f"fragment {shown(text)} does not exist",
                          f"create {shown(root / text, 200)} or fix the path (relative to {shown(root, 200)})")
        try:
            checked(root / text, root, what=f"fragment {shown(text)}", fence_name="the definitions folder")
        except FileRefused as exc:
            raise invalid(exc.message, exc.fix) from None
    return text


def _compose_entry(text: str, info: ValidationInfo) -> str:
    return text if text == DOCKERFILE_PLACEHOLDER else _fragment(text, info)


def _compose(entries: list[str]) -> list[str]:
    count = entries.count(DOCKERFILE_PLACEHOLDER)
    if count != 1:
        raise invalid(f"names {DOCKERFILE_PLACEHOLDER} {count} times",
                      f"put {DOCKERFILE_PLACEHOLDER} exactly once where the definition's own Dockerfile goes")
    return entries


def _file_copy(pair: str, info: ValidationInfo) -> str:
    if not isinstance(pair, str):
        raise invalid(f"expected a string, got {type_name(pair)}", "write 'source:/target'")
    if has_control(pair):
        raise invalid(f"{shown(pair)} contains a control character", "write the pair on one line")
    source, sep, target = pair.partition(":")
    if not sep or not source or not target:
        raise invalid(f"{shown(pair)} is not a source:target pair", "write it as 'files/script.sh:/opt/script.sh'")
    if PurePosixPath(source).is_absolute() or ".." in PurePosixPath(source).parts:
        raise invalid(f"source {shown(source)} leaves the definition folder",
                      "put the file inside the definition folder and name it relative to that folder")
    if not _PATH_WORD.match(source):
        raise invalid(f"source {shown(source)} is not a usable path", _PATH_FIX)
    if not PurePosixPath(target).is_absolute():
        raise invalid(f"target {shown(target)} is not an absolute path", "write the target as /path/in/image")
    if not _PATH_WORD.match(target):
        raise invalid(f"target {shown(target)} is not a usable path", _PATH_FIX)
    if PurePosixPath(source).parts[:1] == (TESTS_FOLDER,):
        raise invalid(f"source {shown(source)} is in tests/, which is not part of the build context",
                      "move the file out of tests/")
    folder = _context(info, "folder")
    if folder is not None:
        path = folder / source
        if not path.exists() and not path.is_symlink():
            raise invalid(f"source {shown(source)} does not exist", f"create {shown(path, 200)} or fix the path")
        try:
            resolved = checked(path, folder, what=f"source {shown(source)}", want_dir=path.is_dir())
        except FileRefused as exc:
            raise invalid(exc.message, exc.fix) from None
        if resolved == Path(folder).resolve():
            raise invalid(f"source {shown(source)} is the whole definition folder", "name a file or a sub-folder")
        _not_ignored(source, Path(folder))
    return pair


def _not_ignored(source: str, folder: Path) -> None:
    """A `files:` source the build context leaves out would make the build's COPY fail, after others built."""
    relative = PurePosixPath(source).as_posix()
    if PurePosixPath(relative).parts[:1] and PurePosixPath(relative).parts[0] in ALWAYS_EXCLUDED:
        raise invalid(f"source {shown(source)} is never part of the build context",
                      "move the file to another name or folder of the definition")
    try:
        rules = ignore_rules(folder)
    except ContextError:
        return  # a bad .dockerignore is its own problem, named when the context is read
    if is_ignored(relative, rules):
        pattern = next(rule.pattern for rule in reversed(rules) if rule.regex.match(relative))
        raise invalid(f"source {shown(source)} is excluded from the build context by the definition's .dockerignore "
                      f"(pattern {shown(pattern)}), so the build's COPY would fail",
                      f"remove the pattern, add the line !{relative} after it, or drop the files: entry")


def _pattern(value: str) -> str:
    if len(value) > _MAX_PATTERN:
        raise invalid(f"the pattern is {len(value)} characters long (at most {_MAX_PATTERN})", "shorten it")
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        raise invalid(f"{shown(value)} is not a valid regular expression ({exc})",
                      "fix the expression or escape special characters with a backslash") from None
    return value


def _metric_regex(value: str) -> str:
    if len(value) > _MAX_PATTERN:
        raise invalid(f"the expression is {len(value)} characters long (at most {_MAX_PATTERN})", "shorten it")
    try:
        groups = re.compile(value).groups
    except (re.error, RecursionError, OverflowError) as exc:
        raise invalid(f"is not a valid regular expression ({exc})", "fix the expression") from None
    if groups != 1:
        raise invalid(f"has {groups} capture groups", "use exactly one group around the number")
    return value


def _metric_name(value: Any) -> str:
    if not isinstance(value, str) or has_control(value) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise invalid(f"{shown(value)} is not a valid metric name", "use letters, digits, '.', '_' or '-'")
    return value


def _finite(value: float) -> float:
    """A bound of .nan or ±.inf makes every comparison false or true: the metric could never fail (or pass)."""
    if not math.isfinite(value):
        raise invalid(f"{value} is not a finite number, so the metric could never fail or never pass",
                      "write a number, e.g. 60 or 1.5, or leave this bound out")
    return value


def _unit(value: str) -> str:
    return check_text(value, what="unit", max_length=32) if value else value


def _script(text: str, info: ValidationInfo) -> str:
    check_text(text, what="script path", max_length=1024)
    folder = _context(info, "folder")
    if PurePosixPath(text).is_absolute() or ".." in PurePosixPath(text).parts:
        raise invalid(f"{shown(text)} leaves the definition folder",
                      "name a script inside the definition folder, e.g. tests/run.sh")
    if folder is not None:
        path = folder / text
        if not path.exists() and not path.is_symlink():
            raise invalid(f"test script {shown(text)} does not exist", f"create {shown(path, 200)} or fix the path")
        try:
            require_readable(checked(path, folder, what=f"test script {shown(text)}"),
                             what=f"test script {shown(text)}")
        except FileRefused as exc:
            raise invalid(exc.message, exc.fix) from None
    return text


def _schema_pattern(pattern: re.Pattern[str]) -> str:
    """A Python pattern as JSON Schema (ECMA-262) writes it: `\\A`/`\\Z` become `^`/`$`."""
    return pattern.pattern.replace("\\A", "^").replace("\\Z", "$")


# Text only: YAML reads `version: 2.10` as the number 2.1 (docs/kinds/index.md, "YAML is read strictly").
Version = Annotated[str, AfterValidator(_version), WithJsonSchema(
    {"type": "string", "pattern": _schema_pattern(VERSION_PATTERN), "maxLength": MAX_VERSION})]
BuildArgs = Annotated[dict[Annotated[Any, AfterValidator(_arg_name)], Annotated[Any, AfterValidator(_arg_value)]],
                      BeforeValidator(_build_args), WithJsonSchema({
                          "type": "object", "propertyNames": {"pattern": _schema_pattern(_ARG_NAME)},
                          "additionalProperties": {"type": "string"}})]
Platform = Annotated[str, AfterValidator(_platform)]
Platforms = Annotated[list[Platform], BeforeValidator(_string_list)]
Body = Annotated[str, AfterValidator(_body)]
Fragment = Annotated[str, AfterValidator(_fragment)]
Compose = Annotated[list[Annotated[str, AfterValidator(_compose_entry)]], BeforeValidator(_string_list),
                    AfterValidator(_compose)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metric(_Model):
    """A number pulled from the output by a regex with one group, with at least one bound."""

    regex: Annotated[str, AfterValidator(_metric_regex)] = Field(
        json_schema_extra={"fix": "give a regular expression with one group capturing the number"})
    min: Annotated[float, Field(strict=True), AfterValidator(_finite)] | None = None
    max: Annotated[float, Field(strict=True), AfterValidator(_finite)] | None = None
    unit: Annotated[str, AfterValidator(_unit)] = ""

    @model_validator(mode="after")
    def _bounds(self) -> Metric:
        if self.min is None and self.max is None:
            raise invalid("has neither min nor max", "give a lower bound (min) or an upper bound (max)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise invalid(f"min {self.min} is above max {self.max}", "swap or fix the bounds")
        return self


class Expect(_Model):
    """How a test is judged: exit code, patterns that must all appear, metric bounds."""

    exit_code: Annotated[int, Field(strict=True, ge=0, le=255)] = 0
    patterns: Annotated[list[Annotated[str, AfterValidator(_pattern)]], BeforeValidator(_string_list)] = []
    metrics: dict[Annotated[str, AfterValidator(_metric_name)], Metric] = {}


class Test(_Model):
    """One test: a script in the definition folder, its resources (`slurm:`) and how it is judged."""

    __test__ = False  # not a pytest test class, despite its name

    name: Annotated[str, AfterValidator(_test_name)] | None = Field(
        default=None, description="default: the script's file name without .sh")
    script: Annotated[str, AfterValidator(_script)] = Field(
        json_schema_extra={"fix": "name the test script, e.g. script: tests/run.sh"})
    run: Literal["image", "host"] = Field(
        default="image", description="image: inside the image; host: in the batch job, with $1 and SCMD")
    slurm: Resources = Resources()
    expect: Expect = Expect()


Tests = Annotated[list[Test], BeforeValidator(lambda value: [] if value is None else value)]


class Variant(_Model):
    """One image of a definition, named <name>-<suffix>; its keys override the top level's."""

    suffix: Annotated[str, AfterValidator(_suffix)] = Field(
        json_schema_extra={"fix": "give every variant a suffix, e.g. suffix: \"2.6\""})
    version: Version | None = None
    build_args: BuildArgs = {}
    platforms: Platforms | None = None
    dockerfile: Body | None = None
    compose: Compose | None = None
    tests: Tests | None = None


class ContainerYaml(_Model):
    """container.yaml: every key optional."""

    version: Version = "latest"
    dockerfile: Body | None = Field(default=None, description="the body, relative to the folder; default Dockerfile")
    fragments: Annotated[list[Fragment], BeforeValidator(_string_list)] = Field(
        default=[], description="files under the definitions root, before the Dockerfile")
    compose: Compose | None = Field(
        default=None, description="exact composition order; $DOCKERFILE is the body; joined byte for byte")
    build_args: BuildArgs = {}
    secrets: Annotated[list[Annotated[str, AfterValidator(_secret)]], BeforeValidator(_string_list)] = Field(
        default=[], description="environment variables handed to the build as BuildKit secrets")
    variants: list[Variant] = []
    platforms: Platforms = []
    files: Annotated[list[Annotated[str, AfterValidator(_file_copy)]], BeforeValidator(_string_list)] = []
    tests: Tests | None = Field(default=None, description="default: every tests/*.sh, judged by exit code 0")


_SECRET_LOOKING = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|_KEY$|^KEY$|CREDENTIAL|PRIVATE)", re.IGNORECASE)


def cross_problems(meta: ContainerYaml, path: Path) -> list[Problem]:
    """Rules across entries of a valid container.yaml: duplicates and exclusive keys."""
    problems: list[Problem] = []
    if meta.compose is not None and meta.fragments:
        problems.append(Problem(path, "compose", "is given together with fragments",
                                "list the fragments inside compose, around $DOCKERFILE, and remove fragments"))
    seen: dict[str, int] = {}
    for index, variant in enumerate(meta.variants):
        if variant.suffix in seen:
            problems.append(Problem(path, f"variants[{index}].suffix",
                                    f"duplicate suffix {shown(variant.suffix)} (also variants[{seen[variant.suffix]}])",
                                    "give each variant its own suffix"))
        else:
            seen[variant.suffix] = index
        if variant.tests is not None:
            problems += _duplicate_tests(variant.tests, path, f"variants[{index}].tests")
    if meta.tests is not None:
        problems += _duplicate_tests(meta.tests, path, "tests")
    for index, name in enumerate(meta.secrets):
        if name in meta.build_args or any(name in variant.build_args for variant in meta.variants):
            problems.append(Problem(path, f"secrets[{index}]", f"{shown(name)} is also a build argument",
                                    "hand it to the build as a secret only (RUN --mount=type=secret,id=NAME)"))
    return problems


def _duplicate_tests(tests: list[Test], path: Path, field: str) -> list[Problem]:
    problems = []
    names: set[str] = set()
    for index, test in enumerate(tests):
        name = name_of(test)
        if name in names:
            problems.append(Problem(path, f"{field}[{index}].name", f"duplicate test name {shown(name)}",
                                    "give each test its own name"))
        names.add(name)
    return problems


def name_of(test: Test) -> str:
    """A test's name: given, or its script's file name without `.sh`."""
    return test.name if test.name is not None else PurePosixPath(test.script).name.removesuffix(".sh")



def secret_looking_args(meta: ContainerYaml) -> list[str]:
    """Build argument names that look like credentials (they would land in the image history)."""
    names = set(meta.build_args)
    for variant in meta.variants:
        names |= set(variant.build_args)
    return sorted(name for name in names if _SECRET_LOOKING.search(name) and not SECRET_NAME.search(name))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of container.yaml, as editors and stock validators read it."""
    schema = ContainerYaml.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "containers-ci container.yaml", **{k: v for k, v in schema.items() if k != "title"}}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
