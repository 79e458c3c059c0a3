"""Every malformed definition is one clear Problem naming the file, the field, the reason and the fix.

Each case writes a small definitions tree into tmp_path; the table says which definition the
problem is filed under, the exact field, and a distinctive part of the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ci.definitions import load_catalog
from ci.errors import DefinitionError, Problem
from ci.plan import make_plan
from tests.support.definitions import write_tree
from tests.support.services import BASE_IMAGE

DOCKERFILE = f"FROM {BASE_IMAGE}\n"


@dataclass(frozen=True)
class Expected:
    key: str
    field: str
    message: str
    fix: str = ""
    more: str = ""  # a second fragment the message must also contain


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, str]
    expected: tuple[Expected, ...]
    extra: dict[str, str] = field(default_factory=dict)


def one(case_id: str, container_yaml: str, field_name: str, message: str, *, fix: str = "", more: str = "",
        extra: dict[str, str] | None = None, dockerfile: str = DOCKERFILE) -> Case:
    """A case about definition `a` (amd64/a) with the given container.yaml."""
    files = {"amd64/a/Dockerfile": dockerfile, "amd64/a/container.yaml": container_yaml, **(extra or {})}
    return Case(case_id, files, (Expected("amd64/a", field_name, message, fix, more),))


def with_test(body: str) -> str:
    """container.yaml with one test (script tests/t.sh exists) whose extra keys are `body`."""
    return "tests:\n  - name: t\n    script: tests/t.sh\n" + body


SCRIPT = {"amd64/a/tests/t.sh": "echo ok\n"}


CASES = [
    one("yaml-syntax-error", "version: '1'\nbuild_args:\n  A: b: c\n", "",
        "is not valid YAML (mapping values are not allowed", more="at line 3, column",
        fix="fix the YAML syntax"),
    one("top-level-not-a-mapping", "- version\n- tests\n", "(top level)", "expected a mapping, got a list"),
    one("unknown-top-level-key", "varients: []\n", "varients", "unknown key 'varients'",
        fix="did you mean 'variants'?"),
    one("unknown-nested-key", with_test("    slurm: {nodes: 1, foo: 2}\n"), "tests[0].slurm.foo",
        "unknown key 'foo'", extra=SCRIPT),
    one("unknown-variant-key", "variants:\n  - {suffix: x, build_arg: {}}\n", "variants[0].build_arg",
        "unknown key 'build_arg'", fix="did you mean 'build_args'?"),
    one("version-as-list", "version: [1, 2]\n", "version", "expected a string, got a list"),
    one("version-not-usable-in-a-tag",
        "version: 'one two'\n", "version", "'one two' cannot be used in an image tag"),
    one("build-args-as-list",
        "build_args: [A, B]\n", "build_args", "expected a mapping of names to values, got a list"),
    one("build-arg-bad-name",
        "build_args: {1ABC: x}\n", "build_args.1ABC", "is not a valid build argument name"),
    one("build-arg-mapping-value", "build_args: {A: {b: 1}}\n", "build_args.A",
        "expected a scalar value, got a mapping"),
    one("fragments-as-string", "fragments: common/header.docker\n", "fragments",
        "expected a list of strings, got a string"),
    one("variants-as-mapping", "variants: {suffix: x}\n", "variants", "expected a list, got a mapping"),
    one("tests-as-mapping", "tests: {name: t}\n", "tests", "expected a list, got a mapping"),
    one("test-entry-not-a-mapping", "tests: [tests/t.sh]\n", "tests[0]", "expected a mapping, got a string",
        extra=SCRIPT),
    one("missing-test-script", "tests:\n  - {name: t, script: tests/nope.sh}\n", "tests[0].script",
        "test script 'tests/nope.sh' does not exist"),
    one("test-without-script", "tests:\n  - {name: t}\n", "tests[0].script", "is missing"),
    one("test-script-outside-folder", "tests:\n  - {name: t, script: ../b/tests/t.sh}\n", "tests[0].script",
        "'../b/tests/t.sh' leaves the definition folder",
        extra={"amd64/b/Dockerfile": DOCKERFILE, "amd64/b/tests/t.sh": "echo\n"}),
    one("invalid-test-name", "tests:\n  - {name: Bad Name, script: tests/t.sh}\n", "tests[0].name",
        "'Bad Name' is not a valid test name", extra=SCRIPT),
    one("duplicate-test-name",
        "tests:\n  - {name: t, script: tests/t.sh}\n  - {name: t, script: tests/t.sh}\n",
        "tests[1].name", "duplicate test name 't'", extra=SCRIPT),
    one("missing-fragment", "fragments: [common/nope.docker]\n", "fragments[0]",
        "fragment 'common/nope.docker' does not exist"),
    one("fragment-leaves-the-tree",
        "fragments: [../x]\n", "fragments[0]", "'../x' leaves the definitions folder"),
    one("files-pair-leaves-folder", "files: ['../b/x.sh:/opt/x.sh']\n", "files[0]",
        "source '../b/x.sh' leaves the definition folder",
        extra={"amd64/b/Dockerfile": DOCKERFILE, "amd64/b/x.sh": "echo\n"}),
    one("files-absolute-source", "files: ['/etc/passwd:/opt/passwd']\n", "files[0]",
        "source '/etc/passwd' leaves the definition folder"),
    one("files-pair-without-colon",
        "files: [files/x.sh]\n", "files[0]", "'files/x.sh' is not a source:target pair",
        extra={"amd64/a/files/x.sh": "echo\n"}),
    one("files-target-not-absolute", "files: ['files/x.sh:opt/x.sh']\n", "files[0]",
        "target 'opt/x.sh' is not an absolute path", extra={"amd64/a/files/x.sh": "echo\n"}),
    one("files-source-missing",
        "files: ['files/x.sh:/opt/x.sh']\n", "files[0]", "source 'files/x.sh' does not exist"),
    one("files-source-in-tests", "files: ['tests/t.sh:/opt/t.sh']\n", "files[0]",
        "source 'tests/t.sh' is in tests/, which is not part of the build context", extra=SCRIPT),
    one("duplicate-variant-suffix", "variants:\n  - {suffix: x}\n  - {suffix: x}\n", "variants[1].suffix",
        "duplicate suffix 'x' (also variants[0])"),
    one("variant-without-suffix",
        "variants:\n  - {build_args: {A: '1'}}\n", "variants[0].suffix", "is missing"),
    one("variant-suffix-not-a-name", "variants:\n  - {suffix: Big}\n", "variants[0].suffix",
        "'Big' cannot be part of an image name"),
    one("slurm-time-in-words", with_test("    slurm: {time: '10 minutes'}\n"), "tests[0].slurm.time",
        "'10 minutes' is not a Slurm time limit", extra=SCRIPT),
    one("slurm-zero-nodes",
        with_test("    slurm: {nodes: 0}\n"), "tests[0].slurm.nodes", "0 is below the minimum 1",
        extra=SCRIPT),
    one("slurm-nodes-as-word", with_test("    slurm: {nodes: two}\n"), "tests[0].slurm.nodes",
        "expected a whole number, got a string", extra=SCRIPT),
    one("slurm-fewer-tasks-than-nodes",
        with_test("    slurm: {nodes: 2, ntasks: 1}\n"), "tests[0].slurm.ntasks",
        "1 tasks cannot fill 2 nodes", extra=SCRIPT),
    one("slurm-negative-gpus", with_test("    slurm: {gpus: -1}\n"), "tests[0].slurm.gpus",
        "-1 is below the minimum 0", extra=SCRIPT),
    one("slurm-extra-without-dashes", with_test("    slurm: {extra: ['--exclusive', '-N2']}\n"),
        "tests[0].slurm.extra[1]", "'-N2' is not a long sbatch option", extra=SCRIPT),
    one("expect-negative-exit-code", with_test("    expect: {exit_code: -1}\n"), "tests[0].expect.exit_code",
        "-1 is below the minimum 0", extra=SCRIPT),
    one("expect-bad-pattern-regex", with_test("    expect: {patterns: ['ok', '(unclosed']}\n"),
        "tests[0].expect.patterns[1]", "'(unclosed' is not a valid regular expression", extra=SCRIPT),
    one("metrics-as-list", with_test("    expect: {metrics: [bw]}\n"), "tests[0].expect.metrics",
        "expected a mapping, got a list", extra=SCRIPT),
    one("metric-regex-without-group",
        with_test("    expect: {metrics: {bw: {regex: 'bw [0-9.]+', min: 1}}}\n"),
        "tests[0].expect.metrics.bw.regex", "has 0 capture groups", extra=SCRIPT),
    one("metric-without-regex", with_test("    expect: {metrics: {bw: {min: 1}}}\n"),
        "tests[0].expect.metrics.bw.regex", "is missing", extra=SCRIPT),
    one("metric-without-bounds",
        with_test("    expect: {metrics: {bw: {regex: 'bw ([0-9.]+)', unit: GB/s}}}\n"),
        "tests[0].expect.metrics.bw", "has neither min nor max", extra=SCRIPT),
    one("metric-min-above-max",
        with_test("    expect: {metrics: {bw: {regex: 'bw ([0-9.]+)', min: 5, max: 1}}}\n"),
        "tests[0].expect.metrics.bw", "min 5.0 is above max 1.0", extra=SCRIPT),
    one("metric-min-not-a-number",
        with_test("    expect: {metrics: {bw: {regex: 'bw ([0-9.]+)', min: fast}}}\n"),
        "tests[0].expect.metrics.bw.min", "expected a number, got a string", extra=SCRIPT),
    one("unsupported-platform", "platforms: [linux/s390x]\n", "platforms[0]",
        "'linux/s390x' is not a supported platform"),
    one("platform-not-matching-arch-folder", "platforms: [linux/arm64]\n", "platforms[0]",
        "'linux/arm64' does not match the 'amd64' folder", fix="move the definition to the arm64/ folder"),
    one("variant-platform-not-matching-arch-folder", "variants:\n  - {suffix: x, platforms: [linux/arm64]}\n",
        "variants[0].platforms[0]", "'linux/arm64' does not match the 'amd64' folder"),
    one("no-from-at-all", "version: '1'\n", "Dockerfile", "has no FROM instruction",
        dockerfile="RUN echo hello\n"),
    one("self-from", "version: '1'\n", "FROM", "'a' is built FROM itself", dockerfile="FROM a\n"),
    Case("missing-dockerfile", {"amd64/a/container.yaml": "version: '1'\n", "amd64/a/motd": "hi\n"},
         (Expected("amd64/a", "Dockerfile", "no Dockerfile, spack.yaml or <name>.def found"),)),
    Case("bad-folder-name", {"amd64/Upper_Case/Dockerfile": DOCKERFILE},
         (Expected("amd64/Upper_Case", "", "'Upper_Case' is not a valid image name"),)),
    Case("from-cycle", {"amd64/a/Dockerfile": "FROM b\n", "amd64/b/Dockerfile": "FROM a:1.0\n"},
         (Expected("amd64/a", "FROM", "FROM cycle: a -> b -> a"),
          Expected("amd64/b", "FROM", "FROM cycle: a -> b -> a"))),
    Case("duplicate-image-name-across-definitions",
         {"amd64/tools/Dockerfile": DOCKERFILE, "amd64/tools/container.yaml": "variants: [{suffix: x}]\n",
          "amd64/tools-x/Dockerfile": DOCKERFILE},
         (Expected("amd64/tools-x", "", "image name 'tools-x' is also produced by",
                   fix="rename one of the definitions"),)),
    Case("from-definition-with-variants",
         {"amd64/tools/Dockerfile": DOCKERFILE,
          "amd64/tools/container.yaml": "variants: [{suffix: a}, {suffix: b}]\n",
          "amd64/child/Dockerfile": "FROM tools\n"},
         (Expected("amd64/child", "FROM", "'tools' has variants and names no single image",
                   fix="name one of: tools-a, tools-b"),)),
    Case("from-an-invalid-parent",
         {"amd64/parent/Dockerfile": DOCKERFILE, "amd64/parent/container.yaml": "versoin: '1'\n",
          "amd64/child/Dockerfile": "FROM parent\n"},
         (Expected("amd64/parent", "versoin", "unknown key 'versoin'"),
          Expected("amd64/child", "FROM", "its parent 'parent' is invalid"))),
    Case("not-an-architecture-folder", {"x86/a/Dockerfile": DOCKERFILE},
         (Expected("x86", "", "'x86' is not an architecture folder"),)),
    Case("stray-file-in-arch-folder", {"amd64/README.md": "notes\n"},
         (Expected("amd64/README.md", "", "is not a definition"),)),
]


def _show(problems: list[Problem]) -> str:
    return "\n".join(f"  [{p.field}] {p.message} ({p.fix})" for p in problems) or "  (no problems)"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_definition_is_reported(tmp_path: Path, case: Case) -> None:
    write_tree(tmp_path, case.files)
    catalog = load_catalog(tmp_path)
    for expected in case.expected:
        problems = catalog.problems.get(expected.key, [])
        matching = [p for p in problems if p.field == expected.field and expected.message in p.message
                    and expected.more in p.message]
        assert matching, (f"no [{expected.field}] '{expected.message}' under {expected.key}; "
                          f"got:\n{_show(problems)}")
        problem = matching[0]
        assert expected.fix in problem.fix
        assert problem.fix, "every problem says how to fix it"
        assert str(problem.path).startswith(str(tmp_path)), "the problem names the file at fault"
    # The plan refuses the tree, and reports every expected problem in its one error.
    with pytest.raises(DefinitionError) as raised:
        make_plan(catalog)
    for expected in case.expected:
        assert any(p.field == expected.field and expected.message in p.message for p in raised.value.problems)


def test_there_are_at_least_25_validation_cases() -> None:
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)


def test_yaml_problem_names_the_file_and_the_line(tmp_path: Path) -> None:
    text = "version: '1'\nbuild_args:\n  A: '1'\n  B: c: d\nfragments: []\n"
    write_tree(tmp_path, {"amd64/a/Dockerfile": DOCKERFILE, "amd64/a/container.yaml": text})
    (problem,) = load_catalog(tmp_path).problems["amd64/a"]
    assert problem.path == tmp_path / "amd64/a/container.yaml"
    assert problem.field == ""
    assert "at line 4, column" in problem.message
    assert str(problem).startswith(f"{tmp_path / 'amd64/a/container.yaml'}: is not valid YAML")


def test_missing_definitions_folder_is_a_problem(tmp_path: Path) -> None:
    catalog = load_catalog(tmp_path / "nope")
    with pytest.raises(DefinitionError, match="the definitions folder does not exist"):
        make_plan(catalog)


def test_problems_of_several_definitions_come_in_one_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "amd64/one/Dockerfile": DOCKERFILE, "amd64/one/container.yaml": "version: [1]\n",
        "amd64/two/Dockerfile": DOCKERFILE,
        "amd64/two/container.yaml": "platforms: [linux/arm64]\nfiles: [x]\n",
        "amd64/three/container.yaml": "version: '1'\n",
        "amd64/good/Dockerfile": DOCKERFILE,
    })
    catalog = load_catalog(tmp_path)
    with pytest.raises(DefinitionError) as raised:
        make_plan(catalog)
    found = {(p.path.relative_to(tmp_path / "amd64").parts[0], p.field) for p in raised.value.problems}
    assert found == {("one", "version"), ("two", "platforms[0]"), ("two", "files[0]"),
                     ("three", "Dockerfile")}
    assert len(str(raised.value).splitlines()) == 4, "one line per problem"


def test_valid_selection_is_not_blocked_by_an_invalid_unselected_definition(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "amd64/good/Dockerfile": DOCKERFILE,
        "amd64/bad/Dockerfile": DOCKERFILE, "amd64/bad/container.yaml": "version: [1]\n",
    })
    plan = make_plan(load_catalog(tmp_path), only=["good"])
    assert list(plan.images) == ["amd64/good"]


def test_valid_selection_is_blocked_by_its_invalid_parent_with_the_parents_problems(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "amd64/grandparent/Dockerfile": DOCKERFILE, "amd64/grandparent/container.yaml": "version: [1]\n",
        "amd64/parent/Dockerfile": "FROM grandparent\n",
        "amd64/child/Dockerfile": "FROM parent\n",
    })
    catalog = load_catalog(tmp_path)
    with pytest.raises(DefinitionError) as raised:
        make_plan(catalog, only=["child"])
    found = {(p.path.parent.name, p.field, p.message) for p in raised.value.problems}
    assert ("parent", "FROM", "its parent 'grandparent' is invalid") in found
    assert ("grandparent", "version", "expected a string, got a list") in found


def test_selecting_an_invalid_definition_by_name_is_blocked(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "amd64/good/Dockerfile": DOCKERFILE,
        "amd64/bad/Dockerfile": DOCKERFILE, "amd64/bad/container.yaml": "version: [1]\n",
    })
    with pytest.raises(DefinitionError, match="expected a string, got a list"):
        make_plan(load_catalog(tmp_path), only=["ba*"])


def test_only_glob_matching_nothing_names_the_glob(tmp_path: Path) -> None:
    write_tree(tmp_path, {"amd64/good/Dockerfile": DOCKERFILE})
    with pytest.raises(DefinitionError) as raised:
        make_plan(load_catalog(tmp_path), only=["good", "pyth*"])
    (problem,) = raised.value.problems
    assert problem.field == "--only"
    assert problem.message == "'pyth*' matches no definition"
    assert "good" in problem.fix


def test_only_glob_matching_an_unsupported_definition_is_not_an_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {"amd64/good/Dockerfile": DOCKERFILE, "_arm64/legacy.def": "Bootstrap: docker\n"})
    plan = make_plan(load_catalog(tmp_path), only=["legacy"])
    assert plan.images == {}
    assert [u.name for u in plan.unsupported] == ["legacy"]
