"""Faults of the site stage, for real: `inv build-all` killed with SIGKILL in the middle of its test
jobs and of a conversion, then run again; a test job cancelled with scancel; and `inv cleanup`
after an earlier run left jobs and staging folders behind.

What a re-run must show: it continues the same run (automatically, or with --resume RUN), no
test job is submitted twice (Slurm's own job list is the witness: `squeue -t all` remembers
finished jobs for MinJobAge = 300 s), each image is promoted exactly once, and tested/ and
failed/ hold only complete folders (image file, result.json, the test logs and exit files).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci import api
from ci.pipeline.report import RunReport
from ci.schedulers import job_name
from tests.support.site_helpers import (
    Check,
    SiteProject,
    assert_complete,
    assert_site_consistent,
    isolated_project,
    job_label,
    passing,
    promoted,
    sleeping,
    slurm_jobs,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]


@pytest.fixture
def site_project(tmp_path: Path) -> Iterator[SiteProject]:
    yield from isolated_project(tmp_path)


def until(gate: Path, seconds: int) -> str:
    """Shell lines that wait for the file `gate`, at most `seconds`: a test job that stays in flight until the
    test lets it end (ch-run shares the host's /tmp, where pytest's folders are; elsewhere it waits it out)."""
    return f"n=0\nwhile [ ! -e '{gate}' ] && [ \"$n\" -lt {seconds * 10} ]; do sleep 0.1; n=$((n + 1)); done\n"


def late_failure(seconds: int = 8, code: int = 4, gate: Path | None = None) -> Check:
    pause = until(gate, seconds) if gate else f"sleep {seconds}\n"
    return Check("late", f'echo "working for up to {seconds}s"\n{pause}echo "giving up"\nexit {code}\n',
                 {"exit_code": 0})


def gated_passing(gate: Path, seconds: int) -> Check:
    check = passing()
    return Check(check.name, until(gate, seconds) + check.body, check.expect)


class Background:
    """`inv build-all` as a child process in its own session, its output in files."""

    def __init__(self, project: SiteProject, *args: str):
        self.project = project
        self.stdout = project.root / f"inv-{len(list(project.root.glob('inv-*.out')))}.out"
        self.stderr = self.stdout.with_suffix(".err")
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(project.inv_command(*args), stdout=out, stderr=err,
                                            cwd=project.root, start_new_session=True)

    def run_id(self) -> str | None:
        runs = [path.name for path in (self.project.state_dir / "runs").glob("*") if path.is_dir()]
        return runs[0] if len(runs) == 1 else None

    def events(self) -> list[dict[str, Any]]:
        run = self.run_id()
        return self.project.events(run) if run else []

    def running(self, step: str) -> set[str]:
        """Images whose `step` has started (by name)."""
        return {event["image"].split("/", 1)[1] for event in self.events()
                if event["step"] == step and event["state"] == "running"}

    def kill(self, *, group: bool) -> None:
        """SIGKILL: only the `inv` process (its children live on), or its whole process group."""
        assert self.process.poll() is None, f"inv ended before the kill:\n{self.stderr.read_text()}"
        if group:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.kill()
        self.process.wait(timeout=30)  # reaped: the lock's owner pid is gone for good

    def output(self) -> str:
        return self.stderr.read_text(errors="replace")


def build_all(project: SiteProject, *more: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    process = project.inv("build-all", "--json", "--definitions", str(project.definitions),
                          "--site-root", project.site_root, *more)
    assert process.stdout.strip(), process.stderr
    return process, json.loads(process.stdout)


def promotions(events: list[dict[str, Any]]) -> collections.Counter[str]:
    """How many times each image's promote step ended (done: tested/, failed: failed/)."""
    return collections.Counter(event["image"].split("/", 1)[1] for event in events
                               if event["step"] == "promote" and event["state"] in ("done", "failed"))


def assert_one_job_per_test(project: SiteProject, run_id: str, expected: dict[str, list[str]]) -> dict[str, str]:
    """Slurm's memory of the run: exactly one job per (image, test); returns {image-test: job id}."""
    jobs = project.jobs()
    names = collections.Counter(name for _, name, _ in jobs)
    prefix = f"{project.job_prefix}-{run_id}-"
    wanted = {job_name(project.job_prefix, run_id, image, test, arch="amd64")
              for image, tests in expected.items() for test in tests}
    assert set(names) == wanted, jobs
    assert all(count == 1 for count in names.values()), f"a test job was submitted twice: {jobs}"
    return {job_label(name, prefix): job_id for job_id, name, _ in jobs}


def verdicts_of(report: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    (image,) = [image for image in report["images"] if image["name"] == name]
    steps = {step["name"]: step for step in image["steps"]}
    return {test["name"]: test for test in steps["test"]["data"]["tests"]} if "test" in steps else {}


# ------------------------------------------------------------------------------------------------
# kill -9 while test jobs run: the next build-all resumes the run and adopts the jobs
# ------------------------------------------------------------------------------------------------


def test_kill_during_test_jobs_then_rerun_adopts_the_jobs(site_project: SiteProject) -> None:
    project = site_project
    expected = {"quick": ["smoke"], "sleepy": ["smoke"], "late": ["late"]}
    gate = project.root / "let-the-jobs-end"
    project.add("quick", [passing()])
    # Both stay in flight, even when conversions crawl on a loaded machine, until the re-run has adopted them
    project.add("sleepy", [gated_passing(gate, 30)])
    project.add("late", [late_failure(seconds=45, gate=gate)])
    first = Background(project, "build-all", "--definitions", str(project.definitions),
                       "--site-root", project.site_root)
    try:
        run_id = wait_for(first.run_id, 60, "the run folder")
        prefix = f"{project.job_prefix}-{run_id}-"

        def in_flight() -> dict[str, str]:
            """Both sleeping jobs submitted and not finished (running, or pending on a busy node)."""
            rows = {job_label(name, prefix): job_id for job_id, name, _ in slurm_jobs(prefix, all_states=False)}
            return rows if {"sleepy-smoke", "late-late"} <= set(rows) else {}

        before = wait_for(in_flight, 120, f"the sleeping test jobs to be submitted:\n{first.output()}")
        first.kill(group=False)
    finally:
        if first.process.poll() is None:
            first.kill(group=True)
    lock = json.loads(Path(project.site_root, ".lock", "owner.json").read_text())
    assert (lock["run_id"], lock["pid"]) == (run_id, first.process.pid), "the dead run still holds the site"
    assert promotions(project.events(run_id))["sleepy"] == 0

    def adopted() -> bool:
        """The re-run is testing both images again: it found their jobs still running."""
        tests = collections.Counter(event["image"].split("/", 1)[1] for event in project.events(run_id)
                                    if event["step"] == "test" and event["state"] == "running")
        return tests["sleepy"] >= 2 and tests["late"] >= 2

    def release() -> None:
        try:
            wait_for(adopted, 120, "the re-run to test the images again")
        finally:
            gate.touch()

    releasing = threading.Thread(target=release, daemon=True)
    releasing.start()
    second, report = build_all(project)
    releasing.join(timeout=130)
    assert f"run {run_id} crashed while holding the site lock; resuming it" in second.stderr
    assert report["run_id"] == run_id, "the same run continues"
    assert second.returncode == 1, second.stderr  # `late` fails its test
    states = {image["name"]: image["state"] for image in report["images"]}
    assert states["sleepy"] == "done" and states["late"] == "failed", second.stderr
    assert states["quick"] in ("done", "up to date"), "promoted before the kill, or after"

    jobs = assert_one_job_per_test(project, run_id, expected)
    for key in ("sleepy-smoke", "late-late"):
        assert jobs[key] == before[key]
    assert verdicts_of(report, "sleepy")["smoke"]["job_id"] == before["sleepy-smoke"], "the running job was adopted"
    late = verdicts_of(report, "late")["late"]
    assert (late["job_id"], late["exit_code"], late["passed"]) == (before["late-late"], 4, False)
    (sleepy,) = [image for image in report["images"] if image["name"] == "sleepy"]
    resumed = {step["name"]: step["detail"] for step in sleepy["steps"]}
    assert resumed["convert"] == resumed["transfer"] == "done in an earlier attempt of this run"

    assert promotions(project.events(run_id)) == {"quick": 1, "sleepy": 1, "late": 1}
    assert set(promoted(project.site_root, "tested")) == {"quick", "sleepy"}
    assert set(promoted(project.site_root, "failed")) == {"late"}
    assert_site_consistent(project.site_root, expected)
    replaced = Path(project.site_root, "staging", run_id, "replaced")
    assert not replaced.exists() or not list(replaced.iterdir()), "nothing was promoted twice"
    assert not Path(project.site_root, ".lock").exists()

    third, again = build_all(project)
    assert third.returncode == 0 and again["run_id"] != run_id, third.stderr
    assert {image["state"] for image in again["images"]} == {"up to date"}


# ------------------------------------------------------------------------------------------------
# kill -9 during a conversion, then --resume RUN
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [False, True], ids=["children-live-on", "whole-process-group"])
def test_kill_during_conversion_then_resume_by_run_id(site_project: SiteProject, group: bool) -> None:
    """`kill -9 PID` leaves the conversion's processes running (orphans that go on writing their scratch
    files while the resumed run converts again); a dying runner takes the whole group with it."""
    project = site_project
    expected = {"alpha": ["smoke"], "beta": ["smoke"]}
    project.add("alpha", [passing()])
    project.add("beta", [passing()])
    first = Background(project, "build-all", "--definitions", str(project.definitions),
                       "--site-root", project.site_root)
    try:
        run_id = wait_for(first.run_id, 60, "the run folder")
        staging = Path(project.site_root, "staging", run_id, "amd64")

        def converting() -> list[Path]:
            return list(staging.glob("*/*/*.sqfs.part.flatten.py"))  # staged just before `docker pull`

        partial = wait_for(converting, 120, f"a conversion in progress:\n{first.output()}", interval=0.05)
        first.kill(group=group)
    finally:
        if first.process.poll() is None:
            first.kill(group=True)
    assert promotions(project.events(run_id)) == {}
    assert promoted(project.site_root, "tested") == {}
    transferred = {event["image"].split("/", 1)[1] for event in project.events(run_id)
                   if event["step"] == "transfer" and event["state"] == "done"}

    second, report = build_all(project, "--resume", run_id)
    assert second.returncode == 0, second.stderr
    assert report["run_id"] == run_id
    assert "resuming it" not in second.stderr, "resumed because asked to, not by guessing"
    interrupted = {path.parts[-3] for path in partial}
    for image in report["images"]:
        steps = {step["name"]: step for step in image["steps"]}
        if image["name"] in transferred:
            assert steps["transfer"]["detail"] == "done in an earlier attempt of this run"
        assert steps["convert"]["state"] == "done"
        if image["name"] in interrupted:
            assert steps["convert"]["detail"] != "done in an earlier attempt of this run", "converted again"
    assert_one_job_per_test(project, run_id, expected)
    assert promotions(project.events(run_id)) == {"alpha": 1, "beta": 1}
    assert set(promoted(project.site_root, "tested")) == {"alpha", "beta"}
    assert_site_consistent(project.site_root, expected)
    for image in ("alpha", "beta"):
        assert [path.name for path in (staging / image).iterdir() if not path.name.startswith(".convert-")] == [], \
            "the staged folders were promoted whole; only the killed attempt's scratch folder may be left"


# ------------------------------------------------------------------------------------------------
# scancel: the job's end is reported as CANCELLED with the reason
# ------------------------------------------------------------------------------------------------


def test_a_job_cancelled_with_scancel_fails_with_its_reason(site_project: SiteProject) -> None:
    project = site_project
    project.add("sleepy", [sleeping(seconds=300)])
    project.add("fine", [passing()])
    outcome: dict[str, RunReport | BaseException] = {}

    def run() -> None:
        try:
            outcome["report"] = project.run()
        except BaseException as exc:  # handed to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ((job_id, _, _),) = wait_for(
        lambda: [job for job in project.jobs(all_states=False) if "-sleepy-sleeper-" in job[1]
                 and job[2] == "RUNNING"], 120, "the sleeping job to start")
    log = wait_for(lambda: next(Path(project.site_root, "staging").glob("*/amd64/sleepy/*/logs/sleeper.out"), None),
                   60, "the job's log")
    wait_for(lambda: "sleeping 300s" in log.read_text(), 60, "the test to start sleeping")
    subprocess.run(["scancel", job_id], check=True)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the run did not notice the cancelled job"
    if "error" in outcome:
        raise outcome["error"]
    report = outcome["report"]
    assert isinstance(report, RunReport)
    assert not report.ok
    states = {image.name: image.state for image in report.images}
    assert states == {"sleepy": "failed", "fine": "done"}
    (image,) = [image for image in report.images if image.name == "sleepy"]
    (test,) = next(step for step in image.steps if step.name == "test").data["tests"]
    assert (test["job_id"], test["state"], test["passed"]) == (job_id, "CANCELLED", False)
    assert test["reasons"][0].startswith(f"job {job_id} CANCELLED"), test["reasons"]
    assert "cancelled outside containers-ci (scancel or an administrator)" in test["reasons"][0]
    assert "CANCELLED" in image.detail
    folder = Path(project.site_root, "failed", "sleepy", f"sleepy-1.0-{image.digest12}")
    result = assert_complete(folder)
    assert result["tests"][0]["state"] == "CANCELLED"
    assert "sleeping 300s" in (folder / "logs" / "sleeper.out").read_text()
    assert not (folder / "logs" / "sleeper.exit").exists(), "the job never reached its end"
    assert set(promoted(project.site_root, "tested")) == {"fine"}


# ------------------------------------------------------------------------------------------------
# inv cleanup
# ------------------------------------------------------------------------------------------------


def _submit(project: SiteProject, run_id: str) -> tuple[str, str]:
    name = job_name(project.job_prefix, run_id, "img", "t")
    result = subprocess.run(["sbatch", "--parsable", f"--job-name={name}", "--output=/dev/null", "--time=5",
                             "--wrap", "sleep 300"], capture_output=True, text=True, check=True)
    return result.stdout.strip().split(";")[0], name


def _old(path: Path, days: int) -> None:
    subprocess.run(["touch", "-d", f"{days} days ago", str(path)], check=True)


def test_cleanup_cancels_dangling_jobs_and_removes_old_staging(site_project: SiteProject) -> None:
    project = site_project
    settings = project.settings()
    site = api.open_site(settings)
    gone_run, active_run, recent_run = "20200101-000000-dead", "20990101-000000-live", "20990101-000000-new"
    staging = Path(project.site_root, "staging")
    for run in (gone_run, active_run, recent_run):
        (staging / run / "img" / "logs").mkdir(parents=True)
        (staging / run / "img" / "logs" / "t.out").write_text("output\n")
    _old(staging / gone_run, 10)
    _old(staging / active_run, 10)  # old, but its run holds the site: kept
    _old(staging / recent_run, 1)
    dangling, dangling_name = _submit(project, gone_run)
    active, _ = _submit(project, active_run)
    site.acquire(active_run)  # this (living) process holds the site for active_run
    try:
        process = project.inv("cleanup", "--site-root", project.site_root, "--days", "2")
    finally:
        site.release(active_run)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert f"cancelled job {dangling} ({dangling_name})" in lines
    assert f"removed {staging / gone_run}" in lines
    assert len(lines) == 2, lines
    def state(job_id: str) -> str | None:
        return {job[0]: job[2] for job in project.jobs()}.get(job_id)

    wait_for(lambda: state(dangling) == "CANCELLED", 30, "the dangling job to be cancelled")
    assert state(active) in ("PENDING", "RUNNING"), "the active run's job is left alone"
    assert sorted(path.name for path in staging.iterdir()) == sorted([active_run, recent_run])

    again = project.inv("cleanup", "--site-root", project.site_root, "--days", "2")
    assert again.returncode == 0, again.stderr
    assert f"cancelled job {active} " in again.stdout, "without a lock holder, its jobs are dangling too"
    assert f"removed {staging / active_run}" in again.stdout
    assert sorted(path.name for path in staging.iterdir()) == [recent_run]
