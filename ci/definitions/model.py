"""What a definition becomes: image specs, their tests, and the catalog of everything found.

These are plain frozen values; the schema layer (`ci.definitions.schema`) reads container.yaml
into them, the kinds (`ci.definitions.kinds`) produce them, the graph links them. Every name
rule lives here, because names end up in image tags, file names and batch job names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ci.definitions.dockerfile import FromReference
from ci.errors import DefinitionError, Problem
from ci.resources import Resources

KNOWN_ARCHES = ("amd64", "arm64")
CONTAINER_YAML = "container.yaml"
TESTS_FOLDER = "tests"
COMMON_FOLDER = "common"

# Docker's grammar of one repository path component, capped so that names fit tags, file names and job names.
MAX_NAME = 128
NAME_PATTERN = re.compile(r"\A[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")
NAME_FIX = ("use lower-case letters and digits, separated by single '.', '_' or '-' "
            f"(starting and ending with a letter or digit, at most {MAX_NAME} characters)")
# A tag is <version>-<digest12>; Docker allows 128 characters.
MAX_VERSION = 128 - 13
VERSION_PATTERN = re.compile(rf"\A[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_VERSION - 1}}}\Z")
# Test names hold no '.', so `<arch>.<image>.<test>` names one test of one image unambiguously although
# image names may contain dots (`mpi` + `hello-world` and `mpi-hello` + `world` stay apart).
MAX_TEST_NAME = 64
TEST_NAME_PATTERN = re.compile(rf"\A[a-z0-9][a-z0-9_-]{{0,{MAX_TEST_NAME - 1}}}\Z")
TEST_NAME_FIX = (f"use lower-case letters, digits, '_' or '-' (no '.', at most {MAX_TEST_NAME} characters), "
                 "starting with a letter or digit")


def is_image_name(name: str) -> bool:
    return len(name) <= MAX_NAME and bool(NAME_PATTERN.match(name))


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
    """One test script of an image, with where it runs and how it is judged.

    `run` is "image" (the script runs inside the image) or "host" (it runs in the batch job on the
    node with `$1` = the image file and `SCMD` = the launcher, as LUMI's tests do).
    """

    __test__ = False  # not a pytest test class, despite its name

    name: str
    script: Path
    slurm: Resources = field(default_factory=Resources)
    expect: Expectation = Expectation()
    run: str = "image"


@dataclass(frozen=True)
class FileCopy:
    """A Spacktainers-style `source:target` pair copied into the image."""

    source: str
    target: str


@dataclass(frozen=True)
class ImageSpec:
    """One image to build: a definition, or one variant of it, with everything resolved.

    `recipe_text` is the exact text the builder gets (for Docker: the composed Dockerfile), read
    once when the definition is loaded, so that the digest and the build can never disagree.
    `compose`, when not empty, is the exact composition order (the body `dockerfile` among the
    fragments), joined byte for byte; otherwise `fragments` go before the body, joined by lines.
    """

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
    kind: str = "docker"
    compose: tuple[Path, ...] = ()
    secrets: tuple[str, ...] = ()
    recipe_text: str = field(default="", compare=False, repr=False)
    builder: str = field(default="", compare=False)  # the kind's builder, set when the catalog is loaded

    @property
    def key(self) -> str:
        return f"{self.arch}/{self.name}"

    @property
    def platform(self) -> str:
        return self.platforms[0] if self.platforms else f"linux/{self.arch}"

    @property
    def recipe(self) -> str:
        """The exact text the builder gets; what the digest hashes and `inv render` writes.

        Discovery fills it from the kind when the catalog is loaded (the model knows no kinds)."""
        return self.recipe_text

    def composed_dockerfile(self) -> str:
        """The Dockerfile as built (the recipe of a Docker definition)."""
        return self.recipe


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
    """Everything found under a definitions root, valid or not.

    `warnings` are things a person should know that do not stop a build (a build argument that
    looks like a secret); problems stop the definitions they are filed under.
    """

    root: Path
    images: dict[str, ImageSpec] = field(default_factory=dict)
    unsupported: list[UnsupportedDefinition] = field(default_factory=list)
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    # keys built only as parents of selected images or when named by --only (ci.spack.builders)
    on_demand: set[str] = field(default_factory=set)

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


def definition_key(spec: ImageSpec) -> str:
    """The key problems are filed under: the definition, shared by all of its variants."""
    return f"{spec.arch}/{spec.definition}"

