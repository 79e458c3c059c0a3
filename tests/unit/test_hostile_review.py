"""Issue 24 reviewed with hostile inputs of our own: each case was accepted, crashed or was misworded on main.

The other hostile-input tests (test_yaml_coercions, test_hostile_values, test_hostile_text) hold the
examples the issue gave; these are neighbours in the same classes that they did not cover:
- YAML keys YAML reads as something else than text (`on:`, `yes:`, `1:`, `~:`), JSON's NaN,
  Infinity and numbers too large for a float;
- FROM lines with BuildKit's other variable forms (`${X:?msg}`, `${X-word}`, `${X%glob}`), a
  `${X:+image}` left empty, and lines naming no image reference at all (`FROM Debian!`);
- `INVOKE_CI_*` variables: Invoke cast them by the default's type (`bool("false")` is true, a list
  or a bad number was a traceback before any task ran), and settings took `inf` seconds;
- JUnit reports with the ESC bytes of coloured test output (no XML reader parsed them) and Markdown
  summaries where a detail's `<!--` hid the rest;
- a secret-named build argument under `ci.openstack_image.build_args`, and a definition's unreadable
  test folder named by the definition instead of the file.
Their valid neighbours stay accepted.
"""

from __future__ import annotations

import json
import os
import time
import xml.dom.minidom
from pathlib import Path
from typing import Any

import pytest

from ci import api
from ci.config.settings import load_settings
from ci.definitions import load_catalog
from ci.documents import DocumentRefused, load_json, load_yaml
from ci.errors import ConfigError, DefinitionError, Problem
from ci.pipeline.report import ImageReport, RunReport, StepReport, to_junit, to_markdown
from tests.support.config import project_config
from tests.support.definitions import as_nobody, inv_without_engine, write_tree
from tests.support.paths import INVOKE_YAML, PROJECT_DIR

FROM = "FROM containers-ci/debian:bookworm\n"


def _problems(root: Path) -> list[Problem]:
    problems = load_catalog(root).all_problems()
    for problem in problems:
        assert problem.fix and "\n" not in str(problem), problem
    return problems


def _tree(base: Path, *, dockerfile: str = FROM, yaml: str | None = None, files: dict[str, str] | None = None) -> Path:
    out = {"amd64/a/Dockerfile": dockerfile, **(files or {})}
    if yaml is not None:
        out["amd64/a/container.yaml"] = yaml
    return write_tree(base / "defs", out)


# -- YAML keys and JSON numbers ---------------------------------------------------------------------------

KEYS = [  # (document, words of the refusal)
    ("on: x\n", "line 1: the key 'on' is read by YAML as the boolean true, not as text"),
    ("build_args:\n  yes: x\n", "line 2: build_args: the key 'yes' is read by YAML as the boolean true"),
    ("build_args:\n  1: x\n", "line 2: build_args: the key '1' is read by YAML as the number 1"),
    ("build_args:\n  ~: x\n", "line 2: build_args: the key '~' is read by YAML as null (no value)"),
    ("tests:\n  - {name: t, expect: {metrics: {1.5: {min: 1}}}}\n", "the key '1.5' is read by YAML as the number 1.5"),
    ("variants:\n  - suffix: a\n    off: x\n", "variants[0]: the key 'off' is read by YAML as the boolean false"),
]


@pytest.mark.parametrize(("text", "words"), KEYS, ids=[text.split(":")[0] + str(i) for i, (text, _) in enumerate(KEYS)])
def test_a_key_yaml_reads_as_no_text_is_refused_with_its_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(DocumentRefused) as refused:
        load_yaml(text)
    assert words in refused.value.message and refused.value.fix.startswith("quote it: \"")
    (problem,) = _problems(_tree(tmp_path, yaml=text))
    assert words in problem.message and problem.path.name == "container.yaml"


def test_quoted_keys_and_duplicates_of_one_boolean_key_keep_their_meaning() -> None:
    assert load_yaml('"on": x\n"1": y\n')[0] == {"on": "x", "1": "y"}
    with pytest.raises(DocumentRefused, match=r"is given twice \(lines 1 and 2\)"):
        load_yaml("yes: 1\ntrue: 2\n")


def test_a_key_yaml_reads_as_no_text_in_a_settings_file_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "site.yaml"
    file.write_text("ci:\n  site:\n    arch:\n      on: {partition: x}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(project_config(), PROJECT_DIR, profile="local", files=[INVOKE_YAML, file])
    assert str(file) in str(raised.value) and "the key 'on' is read by YAML as the boolean true" in str(raised.value)


@pytest.mark.parametrize(("raw", "words"), [
    ('{"limit": NaN}', "holds NaN, which is not JSON"),
    ('{"limit": -Infinity}', "holds -Infinity, which is not JSON"),
    ('{"limit": 1e999}', "holds the number 1e999, too large"),
])
def test_json_refuses_what_python_reads_as_infinite_or_not_a_number(raw: str, words: str) -> None:
    with pytest.raises(DocumentRefused, match=words):
        load_json(raw)
    assert load_json('{"limit": 1.5e300}')["limit"] == 1.5e300


def test_yaml_tags_never_construct_python_objects_and_explicit_text_stays_text(tmp_path: Path) -> None:
    marker = tmp_path / "constructed"
    for text in (f"version: !!python/object/apply:os.system ['touch {marker}']\n",
                 "version: !!python/name:os.system\n", "version: !custom x\n"):
        with pytest.raises(DocumentRefused, match="could not determine a constructor"):
            load_yaml(text)
    assert not marker.exists()
    assert load_yaml("version: !!str 2.10\n")[0] == {"version": "2.10"}
    with pytest.raises(DocumentRefused, match="another document"):
        load_yaml("version: '1'\n---\nversion: '2'\n")
    assert load_yaml("\ufeffversion: '1.0'\n")[0] == {"version": "1.0"}


# -- FROM lines -------------------------------------------------------------------------------------------

NOT_DECLARED = "is not declared by an ARG before the first FROM"
NO_VALUE = "has no value"
NO_REFERENCE = "is not an image reference"
FROMS = [  # (id, Dockerfile, container.yaml, words of the FROM problem; None: accepted)
    ("required-undeclared", "FROM ${X:?set X}\n", None, NOT_DECLARED),
    ("required-without-colon", "FROM ${X?set X}\n", None, NOT_DECLARED),
    ("required-declared-without-value", "ARG X\nFROM ${X:?must set X}\n", None, NO_VALUE),
    ("alternative-is-the-whole-image", "ARG X\nFROM ${X:+containers-ci/debian:bookworm}\n", None, NO_VALUE),
    ("alternative-undeclared", "FROM ${X:+containers-ci/debian:bookworm}\n", None, NO_VALUE),
    ("literal-not-a-reference", "FROM Debian:12!\n", None, NO_REFERENCE),
    ("default-not-a-reference", "ARG X='not an image'\nFROM ${X}\n", None, "it names 'not an image', which"),
    ("default-blank", 'ARG X=" "\nFROM $X\n', None, NO_REFERENCE),
    ("upper-case-build-arg", "ARG X\nFROM ${X}\n", "build_args: {X: Debian}\n", NO_REFERENCE),
    ("valid-required-with-build-arg", "ARG X\nFROM ${X:?must set X}\n",
     "build_args: {X: containers-ci/debian:bookworm}\n", None),
    ("valid-default-without-colon", "FROM ${X-containers-ci/debian:bookworm}\n", None, None),
    ("valid-suffix-removed", "ARG X=containers-ci/debian:bookworm-slim\nFROM ${X%-slim}\n", None, None),
    ("valid-prefix-removed", "ARG X=docker.io/containers-ci/debian:bookworm\nFROM ${X#docker.io/}\n", None, None),
    ("valid-unbraced-default", "ARG X=containers-ci/debian:bookworm\nFROM $X\n", None, None),
    ("valid-stage-case", FROM.replace("\n", " AS Base\n") + "FROM base\n", None, None),
    ("valid-digest", "FROM containers-ci/debian@sha256:" + "a" * 64 + "\n", None, None),
    ("valid-scratch", "FROM scratch\n", None, None),
]


@pytest.mark.parametrize(("dockerfile", "yaml", "words"), [case[1:] for case in FROMS], ids=[c[0] for c in FROMS])
def test_from_lines_with_other_variable_forms_and_no_image(tmp_path: Path, dockerfile: str, yaml: str | None,
                                                           words: str | None) -> None:
    problems = _problems(_tree(tmp_path, dockerfile=dockerfile, yaml=yaml))
    if words is None:
        assert problems == []
        return
    assert [p.field for p in problems] == ["FROM"], problems
    assert words in problems[0].message and problems[0].path.name == "Dockerfile", problems


# -- metric bounds the other tables did not write ----------------------------------------------------------

@pytest.mark.parametrize(("bound", "words"), [
    ("max: 1e309", "got the text '1e309'"),  # YAML 1.1 reads an exponent without '.' as text
    ("min: '5'", "got the text '5'"),
    ("max: 1" + "0" * 400, "is too large for a number"),
    ("max: 1.0e+309", "inf is not a finite number"),
])
def test_metric_bounds_written_as_text_or_too_large_say_so(tmp_path: Path, bound: str, words: str) -> None:
    yaml = "tests: [{name: t, script: tests/t.sh, expect: {metrics: {bw: {regex: 'bw ([0-9.]+)', " + bound + "}}}}]\n"
    problems = _problems(_tree(tmp_path, yaml=yaml, files={"amd64/a/tests/t.sh": "echo bw 1\n"}))
    assert any(words in p.message for p in problems), problems


def test_a_negative_zero_bound_is_a_bound(tmp_path: Path) -> None:
    yaml = "tests: [{name: t, script: tests/t.sh, expect: {metrics: {bw: {regex: 'bw ([0-9.]+)', min: -0.0}}}}]\n"
    assert _problems(_tree(tmp_path, yaml=yaml, files={"amd64/a/tests/t.sh": "echo bw 1\n"})) == []


# -- INVOKE_CI_* variables -----------------------------------------------------------------------------------

ENVIRONMENT = [  # (variable, value, where it lands in `ci`, the value the settings get)
    ("SITE_REQUIRE_TESTS", "false", ("site", "require_tests"), False),
    ("SITE_REQUIRE_TESTS", "FALSE", ("site", "require_tests"), False),
    ("SITE_REQUIRE_TESTS", "1", ("site", "require_tests"), True),
    ("SITE_REQUIRE_TESTS", "no", ("site", "require_tests"), "no"),  # refused by the settings (strict flag)
    ("LIMITS_BUILD", "5", ("limits", "build"), 5),
    ("LIMITS_BUILD", "abc", ("limits", "build"), "abc"),
    ("LIMITS_BUILD", "1.5", ("limits", "build"), "1.5"),
    ("SITE_POLL_INTERVAL", "2.5", ("site", "poll_interval"), 2.5),
    ("ARCH", "amd64,arm64", ("arch",), "amd64,arm64"),
    ("SITE_ACCOUNT", "0755", ("site", "account"), "0755"),
]


@pytest.mark.parametrize(("name", "value", "where", "expected"), ENVIRONMENT)
def test_invoke_ci_variables_keep_their_text_unless_they_read_exactly_as_the_type(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str, where: tuple[str, ...], expected: Any) -> None:
    from invoke.config import Config

    import ci.cli.common  # noqa: F401 - installs the reading of INVOKE_CI_* variables

    config = Config(defaults={**Config.global_defaults(), "ci": project_config()})
    monkeypatch.setenv(f"INVOKE_CI_{name}", value)
    monkeypatch.setenv("INVOKE_RUN_ECHO", "yes")  # Invoke's own keys keep Invoke's casting
    config.load_shell_env()
    got: Any = config.ci
    for key in where:
        got = got[key]
    assert got == expected and type(got) is type(expected)
    assert config.run.echo is True


@pytest.mark.parametrize(("variable", "code", "words"), [
    ("INVOKE_CI_LIMITS_BUILD=abc", 2, "ci.limits.build: expected a whole number"),
    ("INVOKE_CI_SITE_BINDS=/scratch", 2, "ci.site.binds: expected a list"),
    ("INVOKE_CI_SITE_POLL_INTERVAL=inf", 2, "ci.site.poll_interval: inf is not a finite number"),
    ("INVOKE_CI_SITE_REQUIRE_TESTS=maybe", 2, "ci.site.require_tests: expected true or false"),
    ("INVOKE_CI_ARCH=amd64", 0, ""),
])
def test_inv_plan_with_a_bad_variable_exits_2_with_valid_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              variable: str, code: int, words: str) -> None:
    name, value = variable.split("=", 1)
    monkeypatch.setenv(name, value)
    root = _tree(tmp_path)
    result = inv_without_engine(tmp_path, "plan", "--definitions", str(root), "--json")
    where = f"{variable}: rc {result.returncode}\n{result.stderr[-2000:]}"
    assert result.returncode == code and "Traceback" not in result.stderr + result.stdout, where
    data = json.loads(result.stdout)
    assert words in data.get("error", "") if code else data["images"], data


def test_settings_files_refuse_infinite_and_not_a_number_seconds(tmp_path: Path) -> None:
    for text, words in ((".inf", "inf is not a finite number"), (".nan", "nan is not a finite number")):
        file = tmp_path / "f.yaml"
        file.write_text(f"ci:\n  site:\n    poll_interval: {text}\n")
        with pytest.raises(ConfigError, match=words):
            load_settings({**project_config(), "site": {**project_config()["site"], "poll_interval": float(text[1:])}},
                          PROJECT_DIR, profile="local", files=[INVOKE_YAML, file])


@pytest.mark.parametrize(("args", "refused"), [({"GITHUB_TOKEN": "x"}, True), ({"Api_Secret": "x"}, True),
                                               ({"keyboard_layout": "us", "MONKEY": "x"}, False)])
def test_the_helper_image_refuses_secret_named_build_arguments(args: dict[str, str], refused: bool) -> None:
    data = {**project_config(), "openstack_image": {"build_args": args}}
    if not refused:
        load_settings(data, PROJECT_DIR, profile="local")
        return
    with pytest.raises(ConfigError, match=r"ci\.openstack_image\.build_args: build argument \w+ is named as a secret"):
        load_settings(data, PROJECT_DIR, profile="local")


# -- reports -------------------------------------------------------------------------------------------------

DETAIL = "boom \x1b[31mred\x1b[0m <!-- hidden | cell\nnext \x00 \x07"


def _report() -> RunReport:
    image = ImageReport(name="n", version="1.0", digest12="0123456789ab", tag="t", action="build", reason="r",
                        state="failed", detail=DETAIL, duration=1.0)
    test = {"name": "t\x1b", "passed": False, "output_tail": f"out {DETAIL}", "reasons": [DETAIL],
            "metrics": [{"name": "m\x1b", "value": 1, "unit": "u\x1b"}]}
    image.steps = [StepReport(name="test", state="failed", duration=1.0, detail=DETAIL, data={"tests": [test]})]
    return RunReport(run_id="run", profile="p", started=time.time(), finished=time.time(), images=[image],
                     unsupported=[{"name": "u", "arch": "amd64", "kind": "k", "reason": "why\n# <img src=x>"}])


def test_junit_keeps_control_characters_of_test_output_as_escapes() -> None:
    text = to_junit(_report())
    document = xml.dom.minidom.parseString(text)  # raised "not well-formed" on ESC before
    failures = document.getElementsByTagName("failure")
    assert failures and failures[0].getAttribute("message").startswith("boom \\x1b[31mred")
    assert "\x1b" not in text and "<!-- hidden" in document.getElementsByTagName("system-out")[0].firstChild.data


def test_markdown_cells_show_html_pipes_breaks_and_control_characters_as_text() -> None:
    text = to_markdown(_report())
    (row,) = [line for line in text.splitlines() if line.startswith("| `n`")]
    assert "&lt;!-- hidden \\| cell next \\x00 \\x07" in row and "\\x1b[31mred" in row
    assert "\x1b" not in text and "\x00" not in text and "<!--" not in text and "<img" not in text
    assert "\n# " not in text  # the unsupported reason stays in its quote


# -- a definition's unreadable folder, named precisely ------------------------------------------------------



UNREADABLE = [  # (id, files of amd64/a, the path made unreadable, the file the problem names)
    ("tests-folder-of-declared-script", {"container.yaml": "tests: [{name: t, script: tests/t.sh}]\n",
                                         "tests/t.sh": "echo\n"}, "tests", "tests/t.sh"),
    ("dockerignore", {".dockerignore": "*.md\n"}, ".dockerignore", ".dockerignore"),
    ("files-source-folder", {"container.yaml": "files: ['conf:/etc/conf']\n", "conf/app.ini": "x"}, "conf", "conf"),
]


def test_unreadable_parts_of_a_definition_are_named_by_their_own_path(searchable_tmp: Path) -> None:
    roots = {}
    for name, files, unreadable, _ in UNREADABLE:
        root = write_tree(searchable_tmp / name, {"amd64/a/Dockerfile": FROM,
                                                   **{f"amd64/a/{path}": text for path, text in files.items()}})
        for directory, _, names in os.walk(root):
            os.chmod(directory, 0o755)
            for file in names:
                os.chmod(os.path.join(directory, file), 0o644)
        os.chmod(root / "amd64/a" / unreadable, 0)
        roots[name] = str(root)

    def check() -> dict[str, list[str]]:
        out = {}
        for name, root in roots.items():
            try:
                api.plan(load_settings({"docker": {"host": "unix:///nonexistent/docker.sock"}}, PROJECT_DIR,
                                       profile="local", overrides={"definitions": root, "arch": ["amd64"],
                                                                   "state_dir": f"{root}-state"}))
                out[name] = []
            except DefinitionError as exc:
                out[name] = [f"{p.path}: {p.message}" for p in exc.problems]
        return out

    import multiprocessing.pool  # noqa: F401 - the engine probe imports it; nobody may not read the stdlib's files

    results = as_nobody(check)
    for name, _, _, named in UNREADABLE:
        assert any(line.startswith(f"{roots[name]}/amd64/a/{named}: ") and "(Permission denied)" in line
                   for line in results[name]), (name, results[name])


@pytest.mark.parametrize(("dockerfile", "image"), [
    ('ARG BASE=debian TAG\nFROM ${BASE}:${TAG:-12}\n', "debian:12"),  # two declarations on one ARG line
    ('ARG A="deb ian" B=12\nFROM debian:${B}\n', "debian:12"),  # quoted as a shell would
    ('ARG IMG=debian:12\nFROM ${IMG}\n', "debian:12"),
])
def test_every_declaration_of_an_arg_line_counts(dockerfile: str, image: str) -> None:
    from ci.definitions.dockerfile import parse_from_references

    (found,) = parse_from_references(dockerfile, {})
    assert found.image == image and found.undeclared == () and found.empty == ()


def test_a_root_that_is_a_file_is_named_as_not_a_folder(tmp_path: Path) -> None:
    from ci.definitions import load_catalog

    root = tmp_path / "defs"
    root.write_text("not a folder\n")
    (problem,) = [p for problems in load_catalog(root).problems.values() for p in problems]
    assert "is not a folder" in problem.message
