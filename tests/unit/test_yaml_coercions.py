"""Silent YAML (and JSON) coercions: every one is refused with the text as written, its line and the fix.

PyYAML reads `version: 2.10` as 2.1, `0755` as 493, `yes` as true, and keeps the last of two equal
keys. Each table below writes such a value where text is meant (or a key twice) in one kind of file
(container.yaml, a Spack environment, a `.def`, invoke.yaml or an `-f` file, a request body) and
checks the one problem it gives: the field, the line, the value as written and `quote it: ...`.
Legitimate numbers and booleans (numeric and boolean fields) and quoted strings still pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci.config.settings import load_settings
from ci.definitions import load_catalog
from ci.documents import DocumentRefused, load_json, load_yaml
from ci.errors import ConfigError, Problem
from tests.support.config import project_config
from tests.support.definitions import write_tree
from tests.support.paths import INVOKE_YAML, PROJECT_DIR

FROM = "FROM containers-ci/debian:bookworm\n"

# (written, what YAML reads it as): the values a person means as text
COERCED = [("2.10", "the number 2.1"), ("1.0", "the number 1.0"), ("12", "the number 12"),
           ("0x1F", "the number 31"), ("yes", "the boolean true"), ("no", "the boolean false"),
           ("on", "the boolean true"), ("off", "the boolean false"), ("true", "the boolean true"),
           ("2024-01-01", "the date 2024-01-01")]
NULLS = ["null", "~"]
# numbers only YAML 1.1 reads as numbers: refused wherever they are
YAML11 = [("0755", "493"), ("1:30:00", "5400"), ("0b101", "5"), ("1_000", "1000")]


# -- the reader itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "words", "line"), [
    ("a: 1\na: 2\n", "the key 'a' is given twice (lines 1 and 2)", 2),
    ("x:\n  b: 1\n  c: 2\n  b: 3\n", "the key 'x.b' is given twice (lines 2 and 4)", 4),
    ("l:\n  - {k: 1, k: 2}\n", "the key 'l[0].k' is given twice (lines 2 and 2)", 2),
    ("a: [1]\nb: 2\na: {c: 3}\n", "the key 'a' is given twice (lines 1 and 3)", 3),
    ("yes: 1\ntrue: 2\n", "is given twice (lines 1 and 2)", 2),
    *[(f"k: {text}\n", f"k: {text} is read by YAML 1.1 as the number {value}, not as written", 1)
      for text, value in YAML11],
    ("k: [a, 0755]\n", "k[1]: 0755 is read by YAML 1.1", 1),
])
def test_the_reader_refuses_duplicate_keys_and_yaml11_numbers(text: str, words: str, line: int) -> None:
    with pytest.raises(DocumentRefused) as refused:
        load_yaml(text)
    assert words in refused.value.message and refused.value.line == line and refused.value.fix


def test_the_reader_keeps_merge_keys_and_the_text_of_every_non_text_scalar() -> None:
    data, source = load_yaml("base: &b {x: 1, y: 2}\nover:\n  <<: *b\n  x: 2.10\nflags: [yes, 'yes', 0x1F, 1e3]\n")
    assert data == {"base": {"x": 1, "y": 2}, "over": {"x": 2.1, "y": 2}, "flags": [True, "yes", 31, "1e3"]}
    assert source.at(("over", "x")) is not None and source.at(("over", "x")).text == "2.10"  # type: ignore[union-attr]
    assert [(path, scalar.text) for path, scalar in source.changed()] == [
        (("over", "x"), "2.10"), (("flags", 0), "yes"), (("flags", 2), "0x1F")]
    assert source.at(("flags", 1)) is None  # quoted: text as written


@pytest.mark.parametrize(("raw", "words"), [
    ('{"a": 1, "a": 2}', "the key 'a' is given twice"),
    ('{"machine": {"platform": "x", "platform": "y"}}', "the key 'platform' is given twice"),
])
def test_json_duplicate_keys_are_refused(raw: str, words: str) -> None:
    with pytest.raises(DocumentRefused, match=words):
        load_json(raw)
    assert load_json('{"v": 2.10}')["v"].text == "2.10"


# -- container.yaml ----------------------------------------------------------------------------------------


def _problems(root: Path) -> list[Problem]:
    catalog = load_catalog(root)
    problems = catalog.all_problems()
    for problem in problems:
        assert problem.fix and "\n" not in str(problem), problem
    return problems


def _tree(tmp_path: Path, container_yaml: str) -> Path:
    return write_tree(tmp_path / "defs", {"amd64/a/Dockerfile": FROM, "amd64/a/container.yaml": container_yaml})


FIELDS = [  # (container.yaml with {v}, the field, the key the fix names, the line)
    ("version: {v}\n", "version", "version", 1),
    ("variants:\n  - suffix: {v}\n", "variants[0].suffix", "suffix", 2),
    ("build_args:\n  A: x\n  B: {v}\n", "build_args.B", "B", 3),
    ("variants:\n  - suffix: x\n    version: {v}\n", "variants[0].version", "version", 3),
    ("tests:\n  - script: tests/t.sh\n    name: {v}\n", "tests[0].name", "name", 3),
    ("secrets: [{v}]\n", "secrets[0]", None, 1),
    ("platforms: [{v}]\n", "platforms[0]", None, 1),
]


@pytest.mark.parametrize(("text", "reading"), COERCED, ids=[text for text, _ in COERCED])
@pytest.mark.parametrize(("template", "field", "key", "line"), FIELDS, ids=[f[1] for f in FIELDS])
def test_container_yaml_refuses_a_coerced_value_where_text_is_meant(tmp_path: Path, template: str, field: str,
                                                                    key: str | None, line: int, text: str,
                                                                    reading: str) -> None:
    root = _tree(tmp_path, template.format(v=text))
    (root / "amd64/a/tests").mkdir()
    (root / "amd64/a/tests/t.sh").write_text("true\n")
    problems = [p for p in _problems(root) if p.field == field]
    assert len(problems) == 1, _problems(root)
    assert problems[0].message == f"line {line}: YAML reads {text} as {reading}, not as the text '{text}'"
    assert problems[0].fix == (f'quote it: {key}: "{text}"' if key else f'quote it: "{text}"')


@pytest.mark.parametrize("text", NULLS)
@pytest.mark.parametrize(("template", "field"), [("version: {v}\n", "version"),
                                                 ("variants:\n  - suffix: {v}\n", "variants[0].suffix")])
def test_container_yaml_refuses_null_where_a_value_is_required(tmp_path: Path, template: str, field: str,
                                                               text: str) -> None:
    (problem,) = _problems(_tree(tmp_path, template.format(v=text)))
    assert problem.field == field and f"YAML reads {text} as null" in problem.message
    assert problem.fix.startswith("quote it")


@pytest.mark.parametrize(("text", "value"), YAML11)
def test_container_yaml_refuses_yaml11_numbers_in_any_field(tmp_path: Path, text: str, value: str) -> None:
    for template in ("version: {v}\n", "tests:\n  - script: tests/t.sh\n    expect: {{exit_code: {v}}}\n"):
        (problem,) = _problems(_tree(tmp_path, template.format(v=text)))
        assert f"is read by YAML 1.1 as the number {value}" in problem.message and text in problem.fix


@pytest.mark.parametrize(("text", "where"), [
    ("version: '1'\nversion: '2'\n", "'version' is given twice (lines 1 and 2)"),
    ("variants:\n  - suffix: a\n    build_args: {X: '1', X: '2'}\n", "'variants[0].build_args.X' is given twice"),
    ("tests:\n  - script: tests/t.sh\n    slurm:\n      nodes: 1\n      nodes: 2\n",
     "'tests[0].slurm.nodes' is given twice (lines 4 and 5)"),
])
def test_container_yaml_refuses_a_key_given_twice(tmp_path: Path, text: str, where: str) -> None:
    (problem,) = _problems(_tree(tmp_path, text))
    assert where in problem.message and problem.path.name == "container.yaml"


def test_quoted_text_and_real_numbers_still_pass(tmp_path: Path) -> None:
    root = _tree(tmp_path, 'version: "2.10"\nbuild_args: {A: "0755", B: "yes", C: "1.0", D: "~"}\n'
                           'variants: [{suffix: "1.0"}, {suffix: "on"}]\n'
                           "tests:\n  - script: tests/t.sh\n    slurm: {nodes: 2, ntasks: 4, time: 10, gpus: 0}\n"
                           "    expect:\n      exit_code: 3\n      metrics: {bw: {regex: '(\\d+)', min: 2.10}}\n")
    (root / "amd64/a/tests").mkdir()
    (root / "amd64/a/tests/t.sh").write_text("true\n")
    catalog = load_catalog(root)
    assert catalog.all_problems() == []
    spec = catalog.images["amd64/a-1.0"]
    assert spec.version == "2.10" and dict(spec.build_args) == {"A": "0755", "B": "yes", "C": "1.0", "D": "~"}
    assert "amd64/a-on" in catalog.images
    test = spec.tests[0]
    assert (test.slurm.nodes, test.slurm.time, test.expect.exit_code, test.expect.metrics[0].minimum) == (
        2, "10", 3, 2.1)


def test_the_bundled_examples_still_load_without_a_problem() -> None:
    catalog = load_catalog(PROJECT_DIR / "container_definitions")
    assert catalog.all_problems() == [] and catalog.images


# -- Spack environments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field", "words"), [
    ("spack:\n  specs: [zlib, 2.10]\n", "spack.specs[1]", "line 2: YAML reads 2.10 as the number 2.1"),
    ("spack:\n  specs: [zlib]\n  packages:\n    zlib: {version: [2.10]}\n", "spack.packages.zlib.version[0]",
     "line 4: YAML reads 2.10 as the number 2.1; it would reach spack.yaml as 2.1"),
    ("spack:\n  specs: [zlib]\n  config: {shared: yes}\n", "spack.config.shared",
     "line 3: YAML reads yes as the boolean true; it would reach spack.yaml as true"),
    ("spack:\n  specs: [zlib]\n  config: {x: 0x1F}\n", "spack.config.x", "YAML reads 0x1F as the number 31"),
    ("spack:\n  specs: [zlib]\n  specs: [hdf5]\n", "", "the key 'spack.specs' is given twice (lines 2 and 3)"),
    ("spack:\n  specs: [zlib]\n  packages:\n    zlib: {buildable: true}\n    zlib: {buildable: false}\n", "",
     "the key 'spack.packages.zlib' is given twice (lines 4 and 5)"),
    ("spack:\n  specs: [zlib]\n  config: {umask: 0022}\n", "", "0022 is read by YAML 1.1 as the number 18"),
])
def test_spack_yaml_refuses_coerced_values_and_duplicate_keys(tmp_path: Path, text: str, field: str,
                                                              words: str) -> None:
    root = write_tree(tmp_path / "defs", {"amd64/s.yaml": text})
    problems = _problems(root)
    assert any(p.field == field and words in p.message for p in problems), problems


def test_spack_yaml_keeps_numbers_and_booleans_that_read_back_as_written(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "defs", {"amd64/s.yaml": "spack:\n  specs: [zlib]\n  config: {connect_timeout: 4, "
                                                          "shared: true, ratio: 1.5, none: null}\n"
                                                          "  packages:\n    zlib: {version: ['2.10']}\n"})
    assert _problems(root) == []


# -- .def headers and labels -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field", "words"), [
    ("Bootstrap: docker\nFrom: debian:12\nFrom: debian:11\n", "From", "is given twice (lines 2 and 3)"),
    ("Bootstrap: docker\nbootstrap: docker\nFrom: debian:12\n", "bootstrap", "is given twice (lines 1 and 2)"),
    ("Bootstrap: docker\nFrom: debian:12\n\n%labels\n  A 1\n  B 2\n  A 3\n", "%labels[2]",
     "the label 'A' is given twice (line 5 and line 7)"),
])
def test_def_headers_and_labels_refuse_a_key_given_twice(tmp_path: Path, text: str, field: str, words: str) -> None:
    root = write_tree(tmp_path / "defs", {"amd64/x.def": text})
    problems = _problems(root)
    assert any(p.field == field and words in p.message for p in problems), problems


def test_def_header_values_are_kept_as_written(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "defs", {"amd64/x.def": "Bootstrap: docker\nFrom: debian:2.10\n\n%labels\n"
                                                         "  Version 0755\n  Flag yes\n"})
    catalog = load_catalog(root)
    assert catalog.all_problems() == []
    spec = catalog.images["amd64/x"]
    assert spec.version == "2.10" and 'LABEL Version="0755"' in spec.recipe and 'LABEL Flag="yes"' in spec.recipe


# -- invoke.yaml and -f files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigCase:
    id: str
    text: str
    field: str  # "" for a problem of the whole file
    words: str


CONFIG_CASES = [
    *[ConfigCase(f"site-account-{text}", f"ci:\n  site:\n    account: {text}\n", "ci.site.account",
                 f"line 3: YAML reads {text} as {reading}, not as the text '{text}'")
      for text, reading in COERCED],
    ConfigCase("registry-address-number", "ci:\n  site:\n    registry: {address: 5000}\n", "ci.site.registry.address",
               "YAML reads 5000 as the number 5000"),
    ConfigCase("base-image-tag-null", "ci:\n  base_image:\n    tag: ~\n", "ci.base_image.tag", "YAML reads ~ as null"),
    ConfigCase("workflow-profile-number", "ci:\n  workflow: {default_profile: 1.10}\n",
               "ci.workflow.default_profile", "YAML reads 1.10 as the number 1.1"),
    ConfigCase("profile-value", "ci:\n  profiles:\n    local:\n      site: {partition: on}\n", "ci.site.partition",
               "line 4: YAML reads on as the boolean true"),
    ConfigCase("spack-template", "ci:\n  spack:\n    template:\n      spack: {config: {x: 2.10}}\n",
               "ci.spack.template.spack.config.x", "YAML reads 2.10 as the number 2.1; it would reach spack.yaml"),
    ConfigCase("duplicate-top", "ci:\n  arch: [amd64]\nci:\n  arch: [arm64]\n", "",
               "the key 'ci' is given twice (lines 1 and 3)"),
    ConfigCase("duplicate-nested", "ci:\n  site:\n    account: a\n    account: b\n", "",
               "the key 'ci.site.account' is given twice (lines 3 and 4)"),
    ConfigCase("duplicate-outside-ci", "run:\n  echo: true\n  echo: false\n", "",
               "the key 'run.echo' is given twice"),
    ConfigCase("yaml11-number", "ci:\n  limits: {build: 010}\n", "", "010 is read by YAML 1.1 as the number 8"),
    ConfigCase("sexagesimal", "ci:\n  site: {lock_lease: 10:00}\n", "", "10:00 is read by YAML 1.1 as the number 600"),
]


def _load(file: Path, profile: str = "local") -> Any:
    data = yaml.safe_load(file.read_text())  # as Invoke reads it: PyYAML, last key wins
    return load_settings((data or {}).get("ci", {}), PROJECT_DIR, profile=profile, files=[INVOKE_YAML, file])


@pytest.mark.parametrize("item", CONFIG_CASES, ids=[item.id for item in CONFIG_CASES])
def test_config_files_refuse_coerced_text_and_duplicate_keys_naming_file_and_line(tmp_path: Path,
                                                                                  item: ConfigCase) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text(item.text)
    with pytest.raises(ConfigError) as refused:
        _load(file)
    problems = [p for p in refused.value.problems if p.field == item.field and item.words in p.message]
    assert problems, (str(refused.value), refused.value.problems)
    assert all(p.path == file and p.fix for p in problems)
    assert str(file) in str(refused.value)


def test_config_files_still_take_quoted_text_and_real_numbers_and_booleans(tmp_path: Path) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text('ci:\n  site:\n    account: "0755"\n    partition: "yes"\n    lock_lease: 600\n'
                    "    poll_interval: 2.5\n    require_tests: yes\n  limits: {build: 3}\n"
                    "  docker: {buildkit: false}\n")
    settings = _load(file)
    assert (settings.site.account, settings.site.partition, settings.site.lock_lease) == ("0755", "yes", 600)
    assert settings.site.require_tests is True and settings.limits["build"] == 3 and settings.buildkit is False


def test_the_shipped_invoke_yaml_loads_strictly_in_every_profile() -> None:
    data = project_config()
    for profile in data["profiles"]:
        assert load_settings(data, PROJECT_DIR, profile=profile, files=[INVOKE_YAML]).profile == profile


# -- request bodies, through the real app ------------------------------------------------------------------

EFLOWS = {"machine": {"platform": "linux/amd64", "architecture": "rome", "container_engine": "singularity"},
          "workflow": "minimal_workflow", "step_id": "wordcount"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from ci.service.main import create_app
    from ci.service.service import Service
    from tests.support.service_helpers import service_project
    from tests.support.site_helpers import EXAMPLES_DIR

    root = tmp_path_factory.mktemp("service-bodies")
    registry = root / "registry" / "minimal_workflow" / "wordcount"
    registry.mkdir(parents=True)
    (registry / "spack.yaml").write_text("spack:\n  specs: [zlib]\n")
    for step, text in REGISTRY_STEPS.items():
        (registry.parent / step).mkdir()
        (registry.parent / step / "spack.yaml").write_text(text)
    for project in service_project(root, site_services=False, definitions=EXAMPLES_DIR,
                                   workflow_registry=str(root / "registry")):
        with TestClient(create_app(Service(project.settings()), workers=False)) as test_client:
            test_client.headers["Authorization"] = f"Bearer {project.token('alice')}"
            yield test_client


REGISTRY_STEPS = {  # steps of the workflow registry the service reads as YAML
    "twice": "spack:\n  specs: [zlib]\n  specs: [hdf5]\n",
    "coerced": "spack:\n  specs: [zlib]\n  packages:\n    zlib: {version: [2.10]}\n",
}
BODIES = [  # (raw JSON body, the field, words of the message, the fix)
    ('{"definition": "base", "definition": "mpi"}', "body", "the key 'definition' is given twice", "send each key"),
    (json.dumps(EFLOWS)[:-1] + ', "machine": {}}', "body", "the key 'machine' is given twice", "send each key"),
    ('{"machine": {"platform": "linux/amd64", "platform": "linux/arm64", "architecture": "rome", '
     '"container_engine": "docker"}, "workflow": "w", "step_id": "s"}', "body", "the key 'platform' is given twice",
     "send each key"),
    (json.dumps(EFLOWS)[:-1] + ', "version": 2.10}', "version", "expected text, got a number (2.10)",
     'quote it: "2.10"'),
    (json.dumps(EFLOWS)[:-1] + ', "version": 2}', "version", "expected text, got a number (2)", 'quote it: "2"'),
    (json.dumps(EFLOWS)[:-1] + ', "version": true}', "version", "expected text, got a boolean (true)",
     'quote it: "true"'),
    ('{"definition": 12}', "definition", "expected text, got a number (12)", 'quote it: "12"'),
    ('{"definition": "base", "arch": 1.0}', "arch", "expected text, got a number (1.0)", 'quote it: "1.0"'),
]


@pytest.mark.parametrize(("raw", "field", "words", "fix"), BODIES)
def test_request_bodies_refuse_duplicate_keys_and_numbers_where_text_is_meant(client: Any, raw: str, field: str,
                                                                              words: str, fix: str) -> None:
    answer = client.post("/build", content=raw.encode(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    problems = answer.json()["problems"]
    assert any(p["field"] == field and words in p["message"] and p["fix"].startswith(fix) for p in problems), problems


@pytest.mark.parametrize(("step", "words"), [("twice", "the key 'spack.specs' is given twice (lines 2 and 3)"),
                                           ("coerced", "line 4: YAML reads 2.10 as the number 2.1")])
def test_registry_steps_are_read_strictly(client: Any, step: str, words: str) -> None:
    answer = client.post("/build?dry_run=true", json={**EFLOWS, "step_id": step})
    assert answer.status_code == 422, answer.text
    assert any(words in p["message"] and p["fix"] for p in answer.json()["problems"]), answer.text


@pytest.mark.parametrize(("text", "words"), [
    ("apt: [curl]\napt: [wget]\n", "the key 'apt' is given twice (lines 1 and 2)"),
    ("pip: [numpy]\nspack:\n  specs: [zlib]\n  packages: {zlib: {version: [1.10]}}\n",
     "YAML reads 1.10 as the number 1.1"),
    ("apt: [curl, on]\n", "YAML reads on as the boolean true"),
])
def test_eflows_steps_are_read_strictly(tmp_path: Path, text: str, words: str) -> None:
    from ci.errors import DefinitionError
    from ci.service.eflows.step import read_step

    (tmp_path / "eflows4hpc.yaml").write_text(text)
    with pytest.raises(DefinitionError) as refused:
        read_step(tmp_path)
    assert any(words in p.message and p.fix for p in refused.value.problems), refused.value.problems


def test_request_bodies_with_quoted_text_still_pass_the_checks(client: Any) -> None:
    answer = client.post("/build?dry_run=true", json={**EFLOWS, "version": "latest", "force": "false"})
    assert answer.status_code == 200, answer.text


# -- through `inv plan`, as a user runs it: exit 2, valid JSON, no traceback ----------------------------------


def _inv_plan(tmp_path: Path, root: Path, config: str, as_json: bool) -> subprocess.CompletedProcess[str]:
    file = tmp_path / "mine.yaml"
    file.write_text("ci:\n  docker:\n    host: unix:///nonexistent/docker.sock\n" + config)
    command = [str(Path(sys.executable).parent / "inv"), "-f", str(file), "plan", "--definitions", str(root)]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_DATA_HOME": str(tmp_path / "data")}
    return subprocess.run(command + (["--json"] if as_json else []), cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=120, env=env, check=False)


PLANS = [  # (files of the tree, extra lines of the -f file, words of the message)
    ({"amd64/a/Dockerfile": FROM, "amd64/a/container.yaml": "version: 2.10\n"}, "",
     "YAML reads 2.10 as the number 2.1"),
    ({"amd64/a/Dockerfile": FROM, "amd64/a/container.yaml": "version: '1'\nversion: '2'\n"}, "",
     "is given twice (lines 1 and 2)"),
    ({"amd64/s.yaml": "spack:\n  specs: [zlib]\n  config: {x: on}\n"}, "", "YAML reads on as the boolean true"),
    ({"amd64/x.def": "Bootstrap: docker\nFrom: a:1\nFrom: b:2\n"}, "", "is given twice (lines 2 and 3)"),
    ({"amd64/a/Dockerfile": FROM}, "  site:\n    account: 0755\n", "0755 is read by YAML 1.1 as the number 493"),
    ({"amd64/a/Dockerfile": FROM}, "  site:\n    account: 2.10\n", "YAML reads 2.10 as the number 2.1"),
    ({"amd64/a/Dockerfile": FROM}, "  docker:\n    buildkit: true\n", "the key 'ci.docker' is given twice"),
]


@pytest.mark.parametrize(("files", "config", "words"), PLANS)
def test_inv_plan_exits_2_with_valid_json_and_no_traceback(tmp_path: Path, files: dict[str, str], config: str,
                                                           words: str) -> None:
    root = write_tree(tmp_path / "defs", files)
    for as_json in (False, True):
        result = _inv_plan(tmp_path, root, config, as_json)
        where = f"rc {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, where
        if as_json:
            data = json.loads(result.stdout)
            assert data["ok"] is False and any(words in p["message"] for p in data["problems"]), data
        else:
            assert words in result.stderr, where
