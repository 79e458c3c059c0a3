"""The runner allocator against the real local Slurm and an emulated GitHub.

Each Slurm job runs the stand-in runner (tests/github_emulator/runner.py), which reads
ACTIONS_RUNNER_INPUT_JITCONFIG, connects to the emulator, takes any queued job its labels allow
(so runners can be stolen, as on GitHub), completes it and exits. Jobs are tiny (1 CPU, 100 MB).
Every test uses its own name prefix, and cancels whatever of it is left in Slurm.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ci.hosts import without_secrets
from ci.runners.state import State
from tests.cloud_emulator.testing import Witness, assert_nowhere
from tests.github_emulator import TOKEN, Emulator, wait_for
from tests.github_emulator.testing import (
    cancel_all,
    our_jobs,
    serving,
    settings_for,
    standin_runner_dir,
    target,
    unique_prefix,
)
from tests.support.paths import PROJECT_DIR
from tests.support.services import require_slurm

pytestmark = pytest.mark.slurm

JOBCOMP = Path("/var/log/containers-ci/slurm-jobcomp.log")
SPOOLS = (Path("/var/spool/slurmctld"), Path("/var/spool/slurmd"))


@pytest.fixture(autouse=True)
def slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    require_slurm()
    monkeypatch.setenv("CI_GITHUB_TOKEN", TOKEN)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = unique_prefix()
    yield name
    cancel_all(name)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


def finished_jobs(prefix: str) -> list[str]:
    """Names of our Slurm jobs that ended (Slurm's job completion log, as the local site enables)."""
    if not JOBCOMP.exists():
        return []
    return [part.split("=", 1)[1] for line in JOBCOMP.read_text(errors="replace").splitlines()
            for part in line.split() if part.startswith("Name=") and part[5:].startswith(f"{prefix}.")]


def all_done(emulator: Emulator, count: int) -> bool:
    summary = emulator.summary()
    return bool(summary["success"] == count)


class SpoolWatch:
    """Copies of what Slurm keeps of each job while it exists (scripts, environments), for canary checks."""

    def __init__(self) -> None:
        self.seen: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan, daemon=True)
        self._thread.start()

    def _scan(self) -> None:
        while not self._stop.is_set():
            for root in SPOOLS:  # jobs' folders come and go while they are walked: skip what vanished
                for folder, _, files in os.walk(root, onerror=lambda error: None):
                    for name in files:
                        path = os.path.join(folder, name)
                        try:
                            if os.path.getsize(path) < (1 << 20):
                                with open(path, "rb") as handle:
                                    self.seen[path] = handle.read()
                        except OSError:
                            continue
            self._stop.wait(0.1)

    def stop(self, job_ids: set[str]) -> dict[str, str]:
        """What was seen of these jobs (slurmctld's `hash.N/job.ID/`, slurmd's `jobID/` folders)."""
        self._stop.set()
        self._thread.join()
        return {path: data.decode(errors="replace") for path, data in self.seen.items()
                if (match := re.search(r"/job\.?0*(\d+)/", path)) and match.group(1) in job_ids}


def test_twenty_jobs_over_three_targets_get_twenty_runners_and_no_secret_leaks(
        emulator: Emulator, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ci.runners")
    witness = Witness(monkeypatch)
    spool = SpoolWatch()
    labels = {"cpu": ["self-hosted", "slurm", "cpu"], "mem": ["self-hosted", "slurm", "mem"],
              "io": ["self-hosted", "slurm", "io"]}
    settings = settings_for(emulator, tmp_path, [target(name, value) for name, value in labels.items()], prefix=prefix)
    names = list(labels)
    for first in range(0, 20, 5):  # four runs of five jobs
        emulator.add_run([{"labels": labels[names[(first + i) % 3]]} for i in range(5)])
    with serving(settings) as running:
        wait_for(lambda: all_done(emulator, 20), 150, "20 jobs done")
        wait_for(lambda: not our_jobs(prefix), 30, "every runner job ended")
        allocator = running.allocator
        assert allocator is not None
        watcher = State(allocator.state.folder, readonly=True)
        wait_for(lambda: not watcher.live(), 30, "every runner settled")
        watcher.close()
        # the scheduler backend forgets ended jobs (a long-running allocator must not keep 10,000 statuses)
        assert getattr(allocator.scheduler, "_known", None) == {}
    summary = emulator.summary()
    assert summary["served_twice"] == [] and summary["completed"] == 20
    assert len(emulator.github.registered) == 20, emulator.github.registered  # one runner per job, no more
    assert summary["runners"] == 0  # ephemeral: gone after their job
    wait_for(lambda: len(finished_jobs(prefix)) == 20, 20, "Slurm's completion log lists 20 runner jobs")
    assert len(set(finished_jobs(prefix))) == 20
    state = State(tmp_path / "state" / "runners", readonly=True)
    job_ids = {row.job_id for row in state.all() if row.job_id}
    state.close()
    assert len(job_ids) == 20
    spooled = spool.stop(job_ids)
    assert any("ACTIONS_RUNNER_INPUT_JITCONFIG" in text for text in spooled.values()), \
        "the spool watch saw no job script: the check below would be vacuous"
    job_dir = tmp_path / "state" / "runners" / "jobs"
    logs = {path.name: path.read_text() for path in (job_dir / "logs").iterdir()}
    assert any("completed job" in text for text in logs.values())
    assert not list((job_dir / "jit").iterdir()), "a JIT config file was left behind"
    texts = {"allocator log": caplog.text, **spooled, **{f"log {k}": v for k, v in logs.items()}}
    for secret in [TOKEN, *emulator.github.jit_configs]:
        assert_nowhere(secret, witness, texts, [tmp_path])


def test_a_restart_after_kill_9_adopts_and_duplicates_nothing(emulator: Emulator, prefix: str,
                                                               tmp_path: Path) -> None:
    count = 8
    runner_dir = standin_runner_dir(tmp_path / "runner")
    config = tmp_path / "runners.yaml"
    config.write_text(yaml.safe_dump({"ci": {
        "state_dir": str(tmp_path / "state"), "site": {"root": str(tmp_path / "site"), "scheduler": "slurm"},
        "runners": {"github": {"api_url": emulator.url, "repository": emulator.github.repository},
                    "targets": [target("cpu", ["self-hosted", "slurm"])], "poll_interval": 0.5,
                    "runner_dir": str(runner_dir), "prefix": prefix, "metrics": {"port": 0}}}}))
    env = {**os.environ, "CI_GITHUB_TOKEN": TOKEN}
    command = [str(Path(sys.executable).with_name("inv")), "-f", str(config), "runners.serve"]
    log = (tmp_path / "serve.log").open("w")
    emulator.add_run([{"labels": ["self-hosted", "slurm"], "duration": 0.5} for _ in range(count)])
    first = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(emulator.github.registered) >= 3, 60, "the first runners")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert emulator.summary()["success"] < count, "everything finished before the kill: nothing was tested"
    second = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: all_done(emulator, count), 120, f"{count} jobs done after the restart")
        wait_for(lambda: not our_jobs(prefix), 30, "every runner job ended")
    finally:
        second.send_signal(signal.SIGTERM)
        returncode = second.wait(30)
    output = (tmp_path / "serve.log").read_text()
    assert returncode == 0, output
    assert "stopped; runners already started keep running" in output
    assert emulator.summary()["served_twice"] == []
    wait_for(lambda: len(finished_jobs(prefix)) >= count, 20, "the completion log")
    started = finished_jobs(prefix)
    assert len(started) == count, f"{len(started)} runner jobs for {count} jobs: {output}"
    assert emulator.github.runners == {}  # nothing left registered


def test_a_stolen_runner_is_replaced_and_the_surplus_cancelled(emulator: Emulator, prefix: str,
                                                               tmp_path: Path) -> None:
    """The {a} job takes the {a, b} runner; the {a, b} job gets a new one; the idle {a} runner is cancelled."""
    settings = settings_for(emulator, tmp_path, [target("ab", ["a", "b"]), target("a", ["a"])], prefix=prefix)
    runner = tmp_path / "runner" / "run.sh"  # the {a} runner connects late, so the {a, b} one steals
    body = runner.read_text().splitlines()
    runner.write_text("\n".join([body[0], 'case "$SLURM_JOB_NAME" in *.a.*) sleep 3;; esac', *body[1:]]) + "\n")
    emulator.add_run([{"labels": ["a"], "duration": 0.5}])
    emulator.add_run([{"labels": ["a", "b"]}])
    with serving(settings):
        wait_for(lambda: all_done(emulator, 2), 90, "both jobs done")
        wait_for(lambda: not our_jobs(prefix), 30, "the surplus runner cancelled")
    served = {job.name: job.runner_name for job in emulator.github.jobs.values()}
    a_job = next(job for job in emulator.github.jobs.values() if job.labels == ["a"])
    assert a_job.runner_name and a_job.runner_name.startswith(f"{prefix}-ab-"), served
    a_runners = [name for name in emulator.github.registered if name.startswith(f"{prefix}-a-")]
    assert a_runners and set(a_runners) <= set(emulator.github.deleted_runners)  # surplus: deleted, cancelled
    assert len([n for n in emulator.github.registered if n.startswith(f"{prefix}-ab-")]) == 2
    assert emulator.summary()["served_twice"] == []


def test_jobs_queued_while_their_run_is_in_progress_are_served(emulator: Emulator, prefix: str,
                                                               tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path, [target("cpu", ["self-hosted", "slurm"])], prefix=prefix)
    run = emulator.add_run([{"labels": ["self-hosted", "slurm"], "duration": 1}])
    with serving(settings):
        wait_for(lambda: run.status == "in_progress", 60, "the first job running")
        emulator.add_job(run.id, {"labels": ["self-hosted", "slurm"], "name": "needs-first"})  # `needs:` released
        wait_for(lambda: all_done(emulator, 2), 60, "the job queued in an in-progress run done")


def test_a_cancelled_run_cancels_its_pending_runners(emulator: Emulator, prefix: str, tmp_path: Path) -> None:
    # A job holding one of the node's two CPUs keeps runners asking for two pending.
    blocker = subprocess.run(["sbatch", "--parsable", f"--job-name={prefix}-blocker", "--cpus-per-task=1",
                              "--mem=10M", "--time=00:03:00", f"--output={tmp_path}/blocker.out",
                              "--wrap=sleep 170"], capture_output=True, text=True, check=True,
                             env=without_secrets(os.environ)).stdout.strip()
    try:
        wait_for(lambda: subprocess.run(["squeue", "-h", "-j", blocker, "-o", "%T"], capture_output=True,
                                        text=True, check=False).stdout.strip() == "RUNNING", 90, "the blocking job")
        wide = target("wide", ["self-hosted", "slurm"], slurm={"cpus": 2})
        settings = settings_for(emulator, tmp_path, [wide], prefix=prefix)
        run = emulator.add_run([{"labels": ["self-hosted", "slurm"]} for _ in range(3)])
        with serving(settings):
            wait_for(lambda: len(our_jobs(prefix)) == 3, 60, "three pending runner jobs")
            assert {state for _, _, state in our_jobs(prefix)} == {"PENDING"}
            emulator.cancel_run(run.id)
            wait_for(lambda: not our_jobs(prefix), 30, "the pending runner jobs cancelled")
    finally:
        subprocess.run(["scancel", blocker], capture_output=True, check=False)
    assert emulator.github.runners == {}  # their registrations deleted
    assert sorted(emulator.github.deleted_runners) == sorted(emulator.github.registered)
    assert len(emulator.github.registered) == 3


def test_a_runner_job_dying_before_it_connects_is_replaced(emulator: Emulator, prefix: str, tmp_path: Path) -> None:
    marker = tmp_path / "fail-once"
    marker.touch()
    settings = settings_for(emulator, tmp_path, [target("cpu", ["self-hosted", "slurm"])], prefix=prefix)
    standin_runner_dir(tmp_path / "runner", fail_marker=marker)
    emulator.add_run([{"labels": ["self-hosted", "slurm"]}])
    with serving(settings) as running:
        wait_for(lambda: all_done(emulator, 1), 90, "the job done by a second runner")
        assert running.allocator is not None
        problems = running.allocator.errors
    assert not marker.exists()
    first, *rest = emulator.github.registered
    assert rest and first in emulator.github.deleted_runners  # the dead runner's registration is deleted
    assert any("ended before taking a job" in problem for problem in problems), problems


def test_a_signed_webhook_wakes_the_allocator_and_metrics_are_served(emulator: Emulator, prefix: str,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With an hour between polls only the workflow_job webhook can make the queued job be seen."""
    monkeypatch.setenv("CI_GITHUB_WEBHOOK_SECRET", "hook-secret")
    settings = settings_for(emulator, tmp_path, [target("cpu", ["self-hosted", "slurm"])], prefix=prefix,
                            poll_interval=3600, webhook={"port": 0, "path": "/hooks/github"},
                            metrics={"port": 0, "path": "/metrics"})
    with serving(settings) as running:
        wait_for(lambda: running.allocator is not None and running.allocator.last_poll > 0, 30, "the first poll")
        emulator.webhook = (running.urls["webhook"], b"hook-secret")
        emulator.add_run([{"labels": ["self-hosted", "slurm"]}])
        wait_for(lambda: all_done(emulator, 1), 90, "the job served after the webhook")
        with urllib.request.urlopen(running.urls["metrics"], timeout=10) as response:
            text = response.read().decode()
    assert emulator.webhook_deliveries == [202]
    assert "ci_runners_github_api_calls_total" in text and "ci_runners_submitted_total{target=\"cpu\"} 1" in text
    assert 'ci_runners_runners{phase="pending",target="cpu"}' in text
    assert "127.0.0.1" in running.urls["metrics"]


def test_sbatch_failures_are_backed_off_reported_and_leave_no_registration(emulator: Emulator, prefix: str,
                                                                            tmp_path: Path) -> None:
    broken = target("cpu", ["self-hosted", "slurm"], slurm={"partition": "no-such-partition"})
    settings = settings_for(emulator, tmp_path, [broken], prefix=prefix)
    emulator.add_run([{"labels": ["self-hosted", "slurm"]}])
    with serving(settings) as running:
        allocator = running.allocator
        assert allocator is not None
        wait_for(lambda: allocator.backoff.failures.get("cpu", 0) >= 2, 60, "two sbatch failures")
        problems = list(allocator.errors)
        until = allocator.backoff.until["cpu"]
    assert any("sbatch failed for target cpu" in p and "invalid partition" in p.lower() for p in problems), problems
    assert until > time.time()  # still backing off: no third attempt right away
    assert emulator.github.runners == {}  # each failed start's registration was deleted
    assert sorted(emulator.github.deleted_runners) == sorted(emulator.github.registered)
    assert emulator.summary()["queued"] == 1
