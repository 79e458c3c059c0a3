"""The generated workflow's per-image jobs, as its steps run them (`inv` in a fresh process each, with
the workflow's RUN_ID): one image's build fails and is filed under failed/ with its log, the other
goes through transfer, convert and test to tested/, and the next run reports the failure instead of
building it again (until --retry-failed)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ci.github.workflow import WORKFLOW_FILE
from tests.support.paths import PROJECT_DIR
from tests.support.site_helpers import SiteProject, isolated_project, passing, promoted, sleeping, wait_for
from tests.support.workflow_model import jobs_of, load_workflow

PIPELINE = PROJECT_DIR / WORKFLOW_FILE

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]

RUN = "gh-4242-1"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteProject]:
    for project in isolated_project(tmp_path_factory.mktemp("workflow-steps")):
        project.add("good", [passing("smoke")])
        project.add("broken", [passing("smoke")], extra="RUN echo 'no such package: libfoo' && false\n")
        project.add("sleepy", [sleeping("sleeper", 300)])
        yield project


def plan(project: SiteProject, *flags: str) -> dict[str, str]:
    """gh.plan's step outputs, plus `why-<image>`: the reason it prints."""
    process = project.inv("gh.plan", "--json", "--only", "good,broken", *flags)
    assert process.returncode == 0, process.stderr
    data = json.loads(process.stdout)
    return {**data["outputs"], **{f"why-{image['name']}": image["reason"] for image in data["images"]}}


def test_a_failed_build_stays_local_and_is_recorded(project: SiteProject, tmp_path: Path) -> None:
    first = plan(project)
    assert first["build-amd64-good"] == first["build-amd64-broken"] == "true"
    assert first["test-amd64-good"] == first["test-amd64-broken"] == "true"

    broken = project.inv("gh.build", "--run", RUN, "--only", "broken", timeout=600)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "build failure recorded" in broken.stderr
    (stem,) = promoted(project.site_root, "failed")["broken"]
    folder = Path(project.site_root, "failed", "broken", stem)
    assert "no such package: libfoo" in (folder / "logs" / "build.log").read_text()
    result = json.loads((folder / "result.json").read_text())
    assert result["step"] == "build" and result["run_id"] == RUN and result["verdict"] == "failed"
    assert any("libfoo" in line for line in result["log_tail"])

    for argv in (("gh.build", "--run", RUN, "--only", "good"), ("push", "--run", RUN, "--only", "good"),
                 ("site.convert", "--run", RUN, "--only", "good"), ("validate", "--run", RUN, "--only", "good")):
        process = project.inv(*argv, timeout=600)
        assert process.returncode == 0, f"{argv}: {process.stdout}{process.stderr}"
    assert set(promoted(project.site_root, "tested")) == {"good"}

    # the next run: nothing to do for either; the failure is reported with its log, not retried
    outputs = plan(project)
    assert outputs["why-broken"].startswith(f"its build failed in run {RUN}")
    assert str(folder / "logs" / "build.log") in outputs["why-broken"]
    assert {key: value for key, value in outputs.items() if key.startswith(("build-", "test-"))} == dict.fromkeys(
        ("build-amd64-good", "test-amd64-good", "build-amd64-broken", "test-amd64-broken"), "false")
    assert outputs["has_work"] == "false"
    again = project.inv("gh.build", "--run", "gh-4243-1", "--only", "broken")
    assert again.returncode == 1 and "not built again" in again.stderr
    assert not (project.state_dir / "runs" / "gh-4243-1" / "logs" / "broken.build.log").exists()
    retry = plan(project, "--retry-failed")
    assert retry["build-amd64-broken"] == retry["test-amd64-broken"] == "true"
    assert retry["build-amd64-good"] == "false"


def test_a_regression_is_loud_and_the_tested_image_stays(project: SiteProject) -> None:
    """Re-validation of the image tested above: it passes; then its test's expectation is no longer met
    (as after a site update that breaks it): exit 1, REGRESSION, the image stays in tested/."""
    (stem,) = promoted(project.site_root, "tested")["good"]
    folder = Path(project.site_root, "tested", "good", stem)
    passed = project.inv("site.retest", "--json", "--only", "good", timeout=600)
    assert passed.returncode == 0, passed.stderr[-2000:]
    assert json.loads(passed.stdout)["regressions"] == []
    meta_path = project.definitions / "amd64" / "good" / "container.yaml"
    original = meta_path.read_text()
    meta = yaml.safe_load(original)
    meta["tests"][0]["expect"]["patterns"] = ["a line this image never prints"]
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))
    try:
        failed = project.inv("site.retest", "--json", "--only", "good", timeout=600)
    finally:
        meta_path.write_text(original)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["regressions"] == ["good"]
    assert "REGRESSION" in failed.stderr
    assert promoted(project.site_root, "tested")["good"] == [stem]
    assert "good" not in promoted(project.site_root, "failed")
    assert (folder / f"{stem}.sqfs").is_file()
    verdicts = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [line["verdict"] for line in verdicts] == ["passed", "failed"]
    assert "a line this image never prints" in " ".join(verdicts[1]["tests"][0]["reasons"])


def step_script(tmp_path: Path, command: str) -> Path:
    """A step's script as the runner writes it (the `run:` text); the runner runs `bash -e {0}`."""
    script = tmp_path / f"step-{uuid.uuid4().hex[:8]}.sh"
    script.write_text(command + "\n")
    return script


def test_a_cancelled_test_job_releases_the_site_and_the_next_run_proceeds(project: SiteProject,
                                                                          tmp_path: Path) -> None:
    """GitHub's cancel: SIGINT to the step's bash, SIGTERM 7.5 s later, then the tree is killed."""
    run = "gh-4300-1"
    for argv in (("gh.build", "--run", run, "--only", "sleepy"), ("push", "--run", run, "--only", "sleepy"),
                 ("site.convert", "--run", run, "--only", "sleepy")):
        process = project.inv(*argv, timeout=600)
        assert process.returncode == 0, f"{argv}: {process.stdout}{process.stderr}"
    (step,) = [s for s in jobs_of(load_workflow(PIPELINE))["test-amd64-base"]["steps"]
               if str(s.get("run", "")).startswith("exec inv validate")]
    command = shlex.join(project.inv_command("validate", "--run", run, "--only", "sleepy"))
    assert step["run"].startswith("exec inv validate --run \"$RUN_ID\" --only")  # the same call, as the job runs it
    shell = subprocess.Popen(["bash", "-e", str(step_script(tmp_path, f"exec {command}"))], cwd=PROJECT_DIR,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: [job for job in project.jobs(all_states=False) if "sleepy" in job[1]], 120,
                 "the sleeping test job")
        assert Path(project.site_root, ".lock").exists()
        shell.send_signal(signal.SIGINT)  # only bash's pid, as the runner does: exec made it inv's
        try:
            shell.wait(timeout=7.5)
        except subprocess.TimeoutExpired:
            shell.send_signal(signal.SIGTERM)
            shell.wait(timeout=2.5)  # then the runner kills the tree: inv must be gone by now
        out, err = shell.communicate(timeout=5)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode != 0, out + err
    assert wait_for(lambda: not [job for job in project.jobs(all_states=False) if "sleepy" in job[1]], 60,
                    "the test job to be cancelled")
    assert not lock_held(project), f"the lock outlived the cancelled step: {err[-2000:]}"
    assert "sleepy" not in promoted(project.site_root, "tested") | promoted(project.site_root, "failed")

    # the next run (Re-run all jobs: attempt 2) proceeds: cleanup, then a step that takes the site
    for argv in (("cleanup",), ("push", "--run", "gh-4300-2", "--only", "good")):
        process = project.inv(*argv)
        assert process.returncode == 0, f"{argv}: {process.stdout}{process.stderr}"
    assert not lock_held(project)


def lock_held(project: SiteProject) -> bool:
    """Whether any live member holds the site lock (the lock folder may stay as a record)."""
    from ci.hosts import LocalHost
    from ci.site.layout import Site

    site = Site(LocalHost(), project.site_root)
    state = site.read_state() if hasattr(site, "read_state") else None
    if state is not None:
        return bool(state.members) and not state.dead
    return site.read_lock() is not None

