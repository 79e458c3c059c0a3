"""The Dockerfile syntax the planner needs: FROM references, ARG expansion, rewriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.definitions import load_catalog
from ci.definitions.dockerfile import FromReference, expand, parse_from_references, rewrite_from
from ci.pipeline.steps.build import pinned_dockerfile
from ci.plan import make_plan
from tests.support.definitions import definition, write_tree
from tests.support.services import BASE_IMAGE


def images(text: str, build_args: dict[str, str] | None = None) -> list[tuple[str, bool]]:
    return [(ref.image, ref.stage_alias) for ref in parse_from_references(text, build_args or {})]


def test_plain_from_with_line_numbers() -> None:
    text = "# comment\n\nFROM base:1.0\nRUN true\nFROM other\n"
    refs = parse_from_references(text, {})
    assert refs == [FromReference(line=3, image="base:1.0", stage_alias=False),
                    FromReference(line=5, image="other", stage_alias=False)]


@pytest.mark.parametrize(("text", "build_args", "expected"), [
    ("ARG X=base\nFROM ${X}\n", {}, "base"),
    ("ARG X=base\nFROM $X\n", {}, "base"),
    ("ARG X=base\nFROM ${X}\n", {"X": "mpi"}, "mpi"),
    ("ARG X\nFROM ${X:-fallback}\n", {}, "fallback"),
    ("ARG X\nFROM ${X:-fallback}\n", {"X": "given"}, "given"),
    ("ARG X=\nFROM ${X:-fallback}\n", {}, "fallback"),
    ("ARG X=1\nFROM base${X:+-gpu}\n", {}, "base-gpu"),
    ("ARG X\nFROM base${X:+-gpu}\n", {}, "base"),
    ('ARG REPO="registry.example.org/site"\nARG TAG=\'1.2\'\nFROM ${REPO}/base:${TAG}\n', {},
     "registry.example.org/site/base:1.2"),
    ("ARG A=one\nARG B=${A}-two\nFROM ${B}\n", {}, "one-two"),
    ("FROM ${UNDECLARED:-base}\n", {"UNDECLARED": "ignored"}, "base"),
], ids=["braced", "plain", "build-arg-overrides-default", "default-operator", "default-operator-with-value",
        "default-operator-on-empty", "alternative-set", "alternative-unset", "quoted-defaults",
        "arg-from-arg", "undeclared-build-arg-is-not-visible"])
def test_arg_substitution_in_from(text: str, build_args: dict[str, str], expected: str) -> None:
    assert images(text, build_args) == [(expected, False)]


def test_arg_after_the_first_from_does_not_change_later_froms() -> None:
    text = "ARG X=base\nFROM ${X}\nARG X=changed\nFROM ${X}\n"
    assert images(text) == [("base", False), ("base", False)]


def test_multi_stage_aliases_are_not_parents() -> None:
    text = ("FROM base AS build\nRUN make\nFROM build as Test\nFROM other\n"
            "COPY --from=build /x /x\nFROM test\n")
    assert images(text) == [("base", False), ("build", True), ("other", False), ("test", True)]


def test_alias_is_only_known_after_its_stage() -> None:
    text = "FROM later\nFROM base AS later\n"
    assert images(text) == [("later", False), ("base", False)]


def test_from_with_platform_flag_and_continuation() -> None:
    text = "FROM --platform=linux/amd64 \\\n    base AS b\nFROM b\n"
    refs = parse_from_references(text, {})
    assert [(r.line, r.image, r.stage_alias) for r in refs] == [(1, "base", False), (3, "b", True)]


def test_lowercase_from_is_recognised() -> None:
    assert images("from base\n") == [("base", False)]


def test_non_from_lines_mentioning_from_are_ignored() -> None:
    assert images("FROM base\nCOPY --from=base /a /b\nRUN echo FROM x\n# FROM y\n") == [("base", False)]


@pytest.mark.parametrize(("image", "repository"), [
    ("base", "base"),
    ("base:1.0", "base"),
    ("base@sha256:" + "a" * 64, "base"),
    ("base:1.0@sha256:" + "a" * 64, "base"),
    ("registry:5000/site/base", "registry:5000/site/base"),
    ("registry:5000/site/base:2.6", "registry:5000/site/base"),
    ("containers-ci/debian:bookworm", "containers-ci/debian"),
])
def test_repository_strips_tag_and_digest(image: str, repository: str) -> None:
    assert FromReference(line=1, image=image, stage_alias=False).repository == repository


@pytest.mark.parametrize(("text", "variables", "expected"), [
    ("$A/${B}", {"A": "x", "B": "y"}, "x/y"),
    ("${A:-d}", {}, "d"),
    ("${A:+alt}", {"A": "1"}, "alt"),
    ("${A:+alt}", {}, ""),
    ("plain", {}, "plain"),
])
def test_expand(text: str, variables: dict[str, str], expected: str) -> None:
    assert expand(text, variables) == expected


def test_rewrite_from_replaces_parents_and_keeps_alias_and_flags() -> None:
    text = ("ARG BASE=base\n"
            "FROM --platform=linux/amd64 ${BASE} AS build\n"
            "RUN make\n"
            "  FROM mpi:latest as final\n"
            "FROM build\n"
            "FROM debian:12\n")
    tags = {"base": "p/base:12-abc", "mpi": "p/mpi:4-def"}

    def replace(ref: FromReference) -> str | None:
        return None if ref.stage_alias else tags.get(ref.repository)

    assert rewrite_from(text, {}, replace) == (
        "ARG BASE=base\n"
        "FROM --platform=linux/amd64 p/base:12-abc AS build\n"
        "RUN make\n"
        "  FROM p/mpi:4-def as final\n"
        "FROM build\n"
        "FROM debian:12\n")


def test_rewrite_from_follows_build_args() -> None:
    text = "ARG BASE=base\nFROM ${BASE}\n"
    seen: list[str] = []

    def replace(ref: FromReference) -> str | None:
        seen.append(ref.image)
        return f"pinned/{ref.image}:1"

    assert rewrite_from(text, {"BASE": "mpi"}, replace) == "ARG BASE=base\nFROM pinned/mpi:1\n"
    assert seen == ["mpi"]


def test_rewrite_from_without_replacements_is_unchanged() -> None:
    text = "FROM base\nRUN echo hi\n"
    assert rewrite_from(text, {}, lambda ref: None) == text


def test_pinned_dockerfile_names_the_parents_exact_tags(tmp_path: Path) -> None:
    """The build step rewrites FROM <parent> (also via a fragment's ARG) to this plan's parent tag."""
    write_tree(tmp_path, {"common/header.docker": "ARG BASE_IMAGE=base\nFROM ${BASE_IMAGE}\n"})
    definition(tmp_path, "base")
    definition(tmp_path, "via-fragment", dockerfile="RUN true\n",
               container_yaml="fragments: [common/header.docker]\n")
    definition(tmp_path, "multi",
               dockerfile=f"FROM base:1 AS build\nFROM {BASE_IMAGE}\nCOPY --from=build / /\n"
                          "FROM build AS final\n")
    plan = make_plan(load_catalog(tmp_path))
    tags = {"base": plan.images["amd64/base"].tag}
    assert pinned_dockerfile(plan.images["amd64/via-fragment"], tags) == (
        f"ARG BASE_IMAGE=base\nFROM {tags['base']}\nRUN true\n")
    assert pinned_dockerfile(plan.images["amd64/multi"], tags) == (
        f"FROM {tags['base']} AS build\nFROM {BASE_IMAGE}\nCOPY --from=build / /\nFROM build AS final\n")
