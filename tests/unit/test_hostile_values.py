"""Values that cannot mean anything, empty trees and unreadable test files (issue 24): refused at plan time.

Each class was accepted before and failed later, after other images had built, or never:
- a metric bound of .nan or ±.inf (every comparison false: the metric can never fail, or never pass);
- a `FROM ${X}` whose X has no value (not declared by an ARG before the first FROM, or declared with
  no default and no build argument), so the line names no image;
- a `files:` source that the definition's own `.dockerignore` leaves out (the COPY finds nothing);
- a build argument named as a secret (`*_TOKEN`, `*_PASSWORD`, `*_SECRET`, `*_KEY`): build
  arguments stay in the image's history, so it belongs under `secrets:`;
- a definitions root with no definition at all ("0 images", exit 0: a mistyped path looked like
  success), unless `allow_empty` / `--allow-empty`;
- a test script or test file the running user cannot read (its digest and its copy to the site
  skipped it or failed later), checked as the current user and as the unprivileged user nobody.

Each tree runs through `ci.api.plan` (with an engine that does not answer, as on a machine without
Docker); a sample runs through `inv plan` / `inv build-all` (with and without `--json`): exit 2,
valid JSON, no traceback. The valid neighbours of each class must stay accepted.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ci import api
from ci.config.settings import Settings, load_settings
from ci.errors import DefinitionError, Problem
from tests.support.definitions import as_nobody, inv_without_engine, write_tree
from tests.support.paths import PROJECT_DIR

FROM = "FROM containers-ci/debian:bookworm\n"
ROOT_USER = os.geteuid() == 0


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, str]  # relative to the definitions root
    field: str | None  # the problem's field; None: the tree is accepted
    message: str = ""


def tree(id: str, field: str | None, message: str = "", *, yaml: str | None = None, dockerfile: str = FROM,
         files: dict[str, str] | None = None, root_files: dict[str, str] | None = None) -> Case:
    """A case about definition amd64/a: its Dockerfile, container.yaml, more `files` of its folder and
    `root_files` (relative to the definitions root)."""
    out = {"amd64/a/Dockerfile": dockerfile, **{f"amd64/a/{name}": text for name, text in (files or {}).items()},
           **(root_files or {})}
    if yaml is not None:
        out["amd64/a/container.yaml"] = yaml
    return Case(id, out, field, message)


SCRIPT = {"tests/t.sh": "echo bw 1\n"}
FINITE = "is not a finite number"
UNDECLARED = "is not declared by an ARG before the first FROM"
NO_VALUE = "has no value"
IGNORED = "is excluded from the build context by the definition's .dockerignore"
SECRET = "is named as a secret"


def metric(id: str, bound: str | None, bounds: str) -> Case:
    """A case about metric bw of test t; `bound` is the field refused (min or max), None when accepted."""
    yaml = ("tests: [{name: t, script: tests/t.sh, expect: {metrics: {bw: {regex: 'bw ([0-9.]+)', "
            + bounds + "}}}}]\n")
    return tree(id, f"tests[0].expect.metrics.bw.{bound}" if bound else None, FINITE if bound else "", yaml=yaml,
                files=SCRIPT)


CASES: list[Case] = [
    # -- metric bounds that make every comparison false (or true) -------------------------------------
    metric("metric-min-nan", "min", "min: .nan"),
    metric("metric-max-nan-capitalised", "max", "max: .NaN"),
    metric("metric-max-inf", "max", "max: .inf"),
    metric("metric-min-minus-inf", "min", "min: -.inf"),
    metric("metric-max-plus-inf-upper-case", "max", "max: +.INF"),
    metric("metric-both-infinite", "max", "min: -.inf, max: .inf"),
    tree("metric-in-a-variant", "variants[0].tests[0].expect.metrics.bw.min", FINITE,
         yaml="variants: [{suffix: x, tests: [{name: t, script: tests/t.sh, expect: {metrics: {bw: "
              "{regex: 'bw ([0-9.]+)', min: .nan}}}}]}]\n", files=SCRIPT),
    metric("valid-metric-huge-but-finite", None, "min: -1.0e+308, max: 1.0e+308"),
    # -- FROM lines whose variables leave them naming no image ----------------------------------------
    tree("from-undeclared-braced", "FROM", UNDECLARED, dockerfile="FROM ${BASE}\n"),
    tree("from-undeclared-plain", "FROM", UNDECLARED, dockerfile="FROM $BASE\n"),
    tree("from-undeclared-with-a-build-arg", "FROM", "build_args.BASE is not applied to it",
         dockerfile="FROM ${BASE}\n", yaml="build_args: {BASE: containers-ci/debian:bookworm}\n"),
    tree("from-undeclared-empty-fallback", "FROM", UNDECLARED, dockerfile="FROM ${BASE:-}\n"),
    tree("from-arg-after-the-first-from-does-not-count", "FROM", UNDECLARED,
         dockerfile=FROM.replace("\n", " AS one\n") + "ARG BASE=containers-ci/debian:bookworm\nFROM ${BASE}\n"),
    tree("from-declared-without-default", "FROM", NO_VALUE, dockerfile="ARG BASE\nFROM ${BASE}\n"),
    tree("from-declared-empty-default", "FROM", NO_VALUE, dockerfile="ARG BASE=\nFROM $BASE\n"),
    tree("from-declared-quoted-empty-default", "FROM", NO_VALUE, dockerfile='ARG BASE=""\nFROM ${BASE}\n'),
    tree("from-declared-empty-fallback", "FROM", NO_VALUE, dockerfile="ARG BASE\nFROM ${BASE:-}\n"),
    tree("from-empty-build-arg", "FROM", NO_VALUE, dockerfile="ARG BASE\nFROM ${BASE}\n",
         yaml="build_args: {BASE: ''}\n"),
    tree("from-tag-without-value", "FROM", "which is not an image", dockerfile="ARG TAG\nFROM debian:${TAG}\n"),
    tree("from-in-a-fragment", "FROM", "of the composed Dockerfile", dockerfile="RUN true\n",
         yaml="fragments: [common/head.docker]\n", root_files={"common/head.docker": "ARG BASE\nFROM ${BASE}\n"}),
    tree("from-one-variant-without-value", "FROM", "has no value for 'a-b'", dockerfile="ARG BASE\nFROM ${BASE}\n",
         yaml="variants: [{suffix: a, build_args: {BASE: containers-ci/debian:bookworm}}, {suffix: b}]\n"),
    tree("valid-from-default", None, dockerfile="ARG BASE=containers-ci/debian:bookworm\nFROM ${BASE}\n"),
    tree("valid-from-build-arg", None, dockerfile="ARG BASE\nFROM $BASE\n",
         yaml="build_args: {BASE: containers-ci/debian:bookworm}\n"),
    tree("valid-from-fallback", None, dockerfile="FROM ${BASE:-containers-ci/debian:bookworm}\n"),
    tree("valid-from-empty-registry-prefix", None,
         dockerfile="ARG REGISTRY=\nFROM ${REGISTRY}containers-ci/debian:bookworm\n"),
    tree("valid-from-alternative-suffix", None,
         dockerfile="ARG DEBUG\nFROM containers-ci/debian:bookworm${DEBUG:+-dbg}\n"),
    tree("valid-from-automatic-platform-args", None,
         dockerfile="FROM --platform=$BUILDPLATFORM containers-ci/debian:bookworm AS b\nFROM busybox-${TARGETARCH}\n"),
    # -- files: sources the definition's own .dockerignore leaves out ----------------------------------
    tree("files-source-ignored-by-a-glob", "files[0]", IGNORED, yaml="files: ['f.sh:/opt/f.sh']\n",
         files={"f.sh": "x", ".dockerignore": "*.sh\n"}),
    tree("files-source-in-an-ignored-folder", "files[0]", IGNORED, yaml="files: ['conf/app.ini:/etc/app.ini']\n",
         files={"conf/app.ini": "x", ".dockerignore": "conf\n"}),
    tree("files-source-ignored-by-doublestar", "files[0]", IGNORED, yaml="files: ['conf/app.ini:/etc/app.ini']\n",
         files={"conf/app.ini": "x", ".dockerignore": "**/*.ini\n"}),
    tree("files-source-folder-ignored", "files[0]", IGNORED, yaml="files: ['conf:/etc/conf']\n",
         files={"conf/app.ini": "x", ".dockerignore": "conf/\n"}),
    tree("files-source-ignored-by-the-last-rule", "files[0]", IGNORED, yaml="files: ['f.sh:/opt/f.sh']\n",
         files={"f.sh": "x", ".dockerignore": "!f.sh\n*\n"}),
    tree("files-source-dot-slash-ignored", "files[0]", IGNORED, yaml="files: ['./f.sh:/opt/f.sh']\n",
         files={"f.sh": "x", ".dockerignore": "f.sh\n"}),
    tree("files-source-is-container-yaml", "files[0]", "is never part of the build context",
         yaml="files: ['container.yaml:/etc/meta.yaml']\n"),
    tree("valid-files-source-included-again", None, yaml="files: ['f.sh:/opt/f.sh']\n",
         files={"f.sh": "x", ".dockerignore": "*\n!f.sh\n"}),
    tree("valid-files-source-beside-ignored-files", None, yaml="files: ['f.sh:/opt/f.sh']\n",
         files={"f.sh": "x", ".dockerignore": "*.md\nconf/private\n"}),
    # -- build arguments named as secrets -----------------------------------------------------------------
    tree("build-arg-token", "build_args.GITHUB_TOKEN", SECRET, yaml="build_args: {GITHUB_TOKEN: x}\n"),
    tree("build-arg-password-lower-case", "build_args.db_password", SECRET, yaml="build_args: {db_password: x}\n"),
    tree("build-arg-secret-mixed-case", "build_args.Api_Secret", SECRET, yaml="build_args: {Api_Secret: x}\n"),
    tree("build-arg-key", "build_args.SSH_KEY", SECRET, yaml="build_args: {SSH_KEY: x}\n"),
    tree("build-arg-bare-token", "build_args.TOKEN", SECRET, yaml="build_args: {TOKEN: x}\n"),
    tree("build-arg-passwd", "build_args.LDAP_PASSWD", SECRET, yaml="build_args: {LDAP_PASSWD: x}\n"),
    tree("build-arg-token-in-a-variant", "variants[0].build_args.NPM_TOKEN", SECRET,
         yaml="variants: [{suffix: a, build_args: {NPM_TOKEN: x}}]\n"),
    tree("valid-build-args-that-only-contain-the-words", None,
         yaml="build_args: {MONKEY: x, KEYBOARD: us, TOKENIZER: bpe, SECRETARY: x, PASSWORDLESS: 'true'}\n"),
    tree("valid-secret-under-secrets", None, yaml="secrets: [NPM_TOKEN, DB_PASSWORD]\n"),
]


def _settings(root: Path, **overrides: Any) -> Settings:
    # An engine that does not answer: plan then works as on a machine without Docker.
    return load_settings({"docker": {"host": "unix:///nonexistent/docker.sock"}}, PROJECT_DIR, profile="local",
                         overrides={"definitions": str(root), "arch": ["amd64", "arm64"], **overrides})


def _show(problems: list[Problem]) -> str:
    return "\n".join(f"  [{p.field}] {p.message} ({p.fix})" for p in problems) or "  (none)"


@pytest.mark.parametrize("item", CASES, ids=[item.id for item in CASES])
def test_a_value_that_cannot_mean_anything_is_refused_at_plan_time(tmp_path: Path, item: Case) -> None:
    root = write_tree(tmp_path / "defs", item.files)
    if item.field is None:
        result = api.plan(_settings(root))
        assert "amd64/a" in result.plan.images or any(key.startswith("amd64/a-") for key in result.plan.images)
        return
    with pytest.raises(DefinitionError) as raised:
        api.plan(_settings(root))
    problems = raised.value.problems
    matching = [p for p in problems if p.field == item.field and item.message in p.message]
    assert matching, f"no [{item.field}] '{item.message}'; got:\n{_show(problems)}"
    for problem in matching:
        assert problem.fix and "\n" not in str(problem), problem
        assert problem.path.name in ("container.yaml", "Dockerfile"), problem.path


def test_every_class_has_refused_and_valid_trees() -> None:
    assert len({item.id for item in CASES}) == len(CASES)
    for message in (FINITE, UNDECLARED, NO_VALUE, IGNORED, SECRET):
        assert sum(1 for item in CASES if item.message == message) >= 3, message
    assert sum(1 for item in CASES if item.field is None) >= 10


# -- an empty tree ---------------------------------------------------------------------------------------

EMPTY = {
    "an-empty-folder": {},
    "an-empty-architecture-folder": {"amd64/.keep": ""},
    "only-fragments": {"common/head.docker": FROM},
    "only-hidden-entries": {".git/HEAD": "ref: main\n", "amd64/.a/Dockerfile": FROM},
    "only-another-architecture": {"arm64/a/Dockerfile": FROM},  # planned for amd64 only
}


def _empty_root(base: Path, name: str) -> Path:
    root = base / name
    root.mkdir(parents=True)
    return write_tree(root, EMPTY[name])


@pytest.mark.parametrize("name", list(EMPTY))
def test_a_tree_without_definitions_is_an_error_naming_the_root_unless_allowed(tmp_path: Path, name: str) -> None:
    root = _empty_root(tmp_path, name)
    settings = _settings(root, arch=["amd64"])
    with pytest.raises(DefinitionError) as raised:
        api.plan(settings)
    (problem,) = raised.value.problems
    assert problem.path == root.resolve() and "holds no definition (looked in amd64/)" in problem.message
    assert "--allow-empty" in problem.fix and "--definitions" in problem.fix
    assert api.plan(settings, allow_empty=True).plan.images == {}
    with pytest.raises(DefinitionError, match="holds no definition"):  # before any engine is asked
        api.build(settings)
    site_root = tmp_path / f"{name}-site"
    with pytest.raises(DefinitionError, match="holds no definition"):  # before the site is opened
        api.run_pipeline(_settings(root, arch=["amd64"], site_root=str(site_root)))
    assert not site_root.exists()


def test_trees_with_only_disabled_or_broken_definitions_are_not_empty(tmp_path: Path) -> None:
    disabled = write_tree(tmp_path / "disabled", {"_arm64/legacy/Dockerfile": FROM})
    assert [u.name for u in api.plan(_settings(disabled)).plan.unsupported] == ["legacy"]
    broken = write_tree(tmp_path / "broken", {"amd64/a/Dockerfile": "RUN true\n"})
    with pytest.raises(DefinitionError) as raised:
        api.plan(_settings(broken))
    assert [p.message for p in raised.value.problems] == ["has no FROM instruction"]


def test_the_workflow_generator_still_reads_an_empty_tree(tmp_path: Path) -> None:
    from ci.github import workflow as gh_workflow

    settings = _settings(_empty_root(tmp_path, "an-empty-folder"))
    assert api.catalog(settings).images == {}
    assert "jobs:" in gh_workflow.render(api.catalog(settings), settings.workflow, ["local", "cpouta"])


# -- through inv, as a user runs it: exit 2, valid JSON, no traceback --------------------------------------

SAMPLE = ["metric-min-nan", "from-undeclared-braced", "from-declared-without-default", "files-source-ignored-by-a-glob",
          "build-arg-token", "valid-from-empty-registry-prefix"]


def test_a_sample_through_inv_plan_exits_2_with_valid_json(tmp_path: Path) -> None:
    by_id = {item.id: item for item in CASES}
    runs: list[tuple[str, list[str], int, str]] = []  # (what, inv arguments, exit code, message)
    for name in SAMPLE:
        root = write_tree(tmp_path / name, by_id[name].files)
        code = 0 if by_id[name].field is None else 2
        runs += [(name, ["plan", "--definitions", str(root), *flag], code, by_id[name].message)
                 for flag in ([], ["--json"])]
    empty = _empty_root(tmp_path, "an-empty-folder")
    for task in ("plan", "build", "build-all"):
        runs += [(f"empty {task}", [task, "--definitions", str(empty), *flag], 2, "holds no definition")
                 for flag in ([], ["--json"])]
    runs += [("empty plan allowed", ["plan", "--definitions", str(empty), "--allow-empty", *flag], 0, "")
             for flag in ([], ["--json"])]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda run: inv_without_engine(tmp_path, *run[1]), runs))
    for (what, arguments, code, message), result in zip(runs, results, strict=True):
        where = f"{what} {arguments[-1]}: rc {result.returncode}\n{result.stderr[-3000:]}"
        assert result.returncode == code and "Traceback" not in result.stderr + result.stdout, where
        if "--json" in arguments:
            data = json.loads(result.stdout)
            if code == 2:
                assert data["ok"] is False and any(message in p["message"] for p in data["problems"]), data
            elif what == "empty plan allowed":
                assert data["images"] == [], data
        elif code == 2:
            assert message in result.stderr, where
        elif what == "empty plan allowed":
            assert "0 images" in result.stdout, result.stdout


def test_every_task_that_plans_a_tree_takes_allow_empty() -> None:
    from ci.cli import pipeline, site

    for task in (pipeline.plan, pipeline.build, pipeline.build_all, pipeline.push, pipeline.validate,
                 site.site_convert, site.site_test):
        assert "allow_empty" in task.help, task.name


# -- test files the running user cannot read --------------------------------------------------------------

@dataclass(frozen=True)
class Unreadable:
    id: str
    files: dict[str, str]
    path: str  # made unreadable (relative to amd64/a)
    field: str
    mode: int = 0
    extra_modes: dict[str, int] = field(default_factory=dict)


UNREADABLE = [
    Unreadable("declared-script", {"container.yaml": "tests: [{name: t, script: tests/t.sh}]\n",
                                   "tests/t.sh": "echo\n"}, "tests/t.sh", "tests[0].script"),
    Unreadable("declared-script-outside-tests", {"container.yaml": "tests: [{name: t, script: checks/run.sh}]\n",
                                                 "checks/run.sh": "echo\n", ".dockerignore": "checks\n"},
               "checks/run.sh", "tests[0].script"),
    Unreadable("default-script", {"tests/t.sh": "echo\n"}, "tests/t.sh", "tests"),
    Unreadable("test-data-file", {"tests/t.sh": "echo\n", "tests/data/input.txt": "1 2 3\n"},
               "tests/data/input.txt", "tests"),
    Unreadable("write-only-script", {"tests/t.sh": "echo\n"}, "tests/t.sh", "tests", mode=0o200),
    Unreadable("execute-only-script", {"tests/t.sh": "echo\n"}, "tests/t.sh", "tests", mode=0o111),
    Unreadable("declared-script-of-a-variant", {
        "container.yaml": "variants: [{suffix: x, tests: [{name: t, script: tests/t.sh}]}]\n",
        "tests/t.sh": "echo\n"}, "tests/t.sh", "variants[0].tests[0].script"),
]




def _unreadable_trees(base: Path) -> dict[str, Path]:
    roots = {}
    for item in UNREADABLE:
        root = write_tree(base / item.id, {"amd64/a/Dockerfile": FROM,
                                           **{f"amd64/a/{name}": text for name, text in item.files.items()}})
        for directory, _, files in os.walk(root):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        os.chmod(root / "amd64/a" / item.path, item.mode)
        roots[item.id] = root
    return roots


def _plan_problems(roots: dict[str, Path]) -> dict[str, list[list[str]]]:
    """Each tree through `ci.api.plan`: its problems as [file, field, message] (none when it plans)."""
    out: dict[str, list[list[str]]] = {}
    for name, root in roots.items():
        try:
            api.plan(_settings(root, state_dir=str(root.parent / f"{name}-state")))
            out[name] = []
        except DefinitionError as exc:
            out[name] = [[str(p.path), p.field, p.message] for p in exc.problems]
    return out


def _assert_refused(results: dict[str, list[list[str]]], who: str) -> None:
    for item in UNREADABLE:
        found = [p for p in results[item.id] if p[1] == item.field and "cannot be read (Permission denied)" in p[2]
                 and item.path.rsplit("/", 1)[-1] in p[2]]
        assert found, f"{item.id} as {who}: {results[item.id]}"


def test_unreadable_test_files_are_problems_for_a_user_who_cannot_read_them(searchable_tmp: Path) -> None:
    roots = _unreadable_trees(searchable_tmp)
    _assert_refused(as_nobody(lambda: _plan_problems(roots)), "nobody")


def test_unreadable_test_files_as_the_running_user(searchable_tmp: Path) -> None:
    """Root reads every file: then the trees are accepted; any other user gets the problems."""
    results = _plan_problems(_unreadable_trees(searchable_tmp))
    if ROOT_USER:
        assert all(problems == [] for problems in results.values()), results
    else:
        _assert_refused(results, "the running user")
