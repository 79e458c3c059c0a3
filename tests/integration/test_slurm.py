"""The Slurm and direct schedulers against the real thing: one-node Slurm and this machine's shell.

Slurm's time limits are whole minutes and slurmctld checks them every 30 s. So the TIMEOUT job is
submitted when the module starts, with a one-minute limit, and once it runs its limit is lowered to
zero (`scontrol update TimeLimit=0`, as a user may do to their own job): the next check ends it,
while the other tests run beside it on the node's second CPU, and it is checked last.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from ci.definitions import SlurmResources
from ci.hosts import CommandResult, LocalHost
from ci.schedulers import DirectScheduler, JobSpec, JobState, JobStatus, SlurmScheduler
from tests.support.services import require_slurm

RUN = uuid.uuid4().hex[:8]
PREFIX = f"cci-test{RUN}"




class CountingHost(LocalHost):
    """This machine, counting the commands each poll costs."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult:
        self.commands.append(tuple(command))
        return super().run(command, env=env, stdin=stdin, timeout=timeout, check=check, cwd=cwd)


@pytest.fixture(scope="module")
def host() -> CountingHost:
    return CountingHost()


@pytest.fixture(scope="module")
def slurm(host: CountingHost) -> SlurmScheduler:
    require_slurm()
    return SlurmScheduler(host, backoff=0.5)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


def job(workdir: Path, name: str, body: str, time_limit: str = "00:02:00") -> JobSpec:
    return JobSpec(name=f"{PREFIX}-{name}", workdir=str(workdir), output=str(workdir / "logs" / f"{name}.out"),
                   script=f"#!/bin/sh\n{body}\n", resources=SlurmResources(time=time_limit),
                   env={"CI_GREETING": "hello from the submit host"})


def wait(scheduler: SlurmScheduler | DirectScheduler, job_id: str, timeout: float = 60) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = scheduler.poll([job_id])[job_id]
        if status.terminal or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


@pytest.fixture(scope="module")
def timeout_job(slurm: SlurmScheduler, workdir: Path) -> Iterator[str]:
    job_id = slurm.submit(job(workdir, "timeout", "echo started; sleep 300", time_limit="1"))
    log = workdir / "logs" / "timeout.out"
    deadline = time.monotonic() + 90
    while not (started := log.exists() and log.read_text().startswith("started")) and time.monotonic() < deadline:
        time.sleep(0.2)
    if started:  # a limit of zero minutes ends it at slurmctld's next check, not a minute from now
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=0"], check=True, capture_output=True)
    yield job_id
    slurm.cancel([job_id])


@pytest.mark.slurm
def test_a_job_runs_and_reports_its_exit_code(slurm: SlurmScheduler, workdir: Path, timeout_job: str) -> None:
    ok = slurm.submit(job(workdir, "ok", 'echo "$CI_GREETING in $(pwd)"'))
    bad = slurm.submit(job(workdir, "bad", "echo failing >&2; exit 7"))
    statuses = {job_id: wait(slurm, job_id) for job_id in (ok, bad)}
    assert (statuses[ok].state, statuses[ok].exit_code) == (JobState.COMPLETED, 0)
    assert (statuses[bad].state, statuses[bad].exit_code, statuses[bad].reason) == (JobState.FAILED, 7,
                                                                                   "NonZeroExitCode")
    assert statuses[ok].name == f"{PREFIX}-ok"
    assert (workdir / "logs" / "ok.out").read_text() == f"hello from the submit host in {workdir}\n"
    assert (workdir / "logs" / "bad.out").read_text() == "failing\n"
    assert (workdir / f"{PREFIX}-ok.sbatch").exists()


@pytest.mark.slurm
def test_one_query_polls_many_jobs(slurm: SlurmScheduler, host: CountingHost, workdir: Path) -> None:
    ids = [slurm.submit(job(workdir, f"many{i}", f"exit {i}")) for i in range(3)]
    deadline = time.monotonic() + 60
    while True:
        before = len(host.commands)
        statuses = slurm.poll(ids)
        assert len(host.commands) - before == 1, host.commands[before:]
        if all(s.terminal for s in statuses.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [statuses[i].exit_code for i in ids] == [0, 1, 2]
    before = len(host.commands)
    slurm.poll(ids)
    assert len(host.commands) == before  # finished jobs are remembered, not asked about again


@pytest.mark.slurm
def test_cancelled_job_reports_cancelled_with_its_reason(slurm: SlurmScheduler, workdir: Path) -> None:
    job_id = slurm.submit(job(workdir, "cancel", "sleep 300"))
    assert [s.job_id for s in slurm.find(PREFIX) if s.name == f"{PREFIX}-cancel"] == [job_id]
    slurm.cancel([job_id], reason="run interrupted by the test")
    status = wait(slurm, job_id)
    assert (status.state, status.reason) == (JobState.CANCELLED, "run interrupted by the test")
    # A fresh scheduler (a resumed run) reads the reason back from Slurm itself.
    fresh = wait(SlurmScheduler(LocalHost()), job_id)
    assert (fresh.state, fresh.reason) == (JobState.CANCELLED, "run interrupted by the test")
    assert job_id not in [s.job_id for s in slurm.find(PREFIX)]


@pytest.mark.slurm
def test_a_job_slurm_no_longer_lists_comes_from_the_completion_log(slurm: SlurmScheduler, workdir: Path) -> None:
    job_id = slurm.submit(job(workdir, "purged", "exit 4"))
    wait(slurm, job_id)
    statuses = SlurmScheduler(LocalHost())._sacct([job_id])  # as if squeue had forgotten it
    assert (statuses[job_id].state, statuses[job_id].exit_code) == (JobState.FAILED, 4)


@pytest.mark.slurm
def test_time_limit_ends_in_timeout(slurm: SlurmScheduler, timeout_job: str, workdir: Path) -> None:
    status = wait(slurm, timeout_job, timeout=150)
    assert (status.state, status.reason) == (JobState.TIMEOUT, "TimeLimit")
    assert (workdir / "logs" / "timeout.out").read_text().startswith("started")


# -- the direct scheduler (no Slurm needed) -------------------------------------------------------------

@pytest.fixture
def direct(tmp_path: Path) -> DirectScheduler:
    return DirectScheduler(LocalHost(), str(tmp_path / "state"))


def test_direct_runs_reports_and_cancels(direct: DirectScheduler, tmp_path: Path) -> None:
    ok = direct.submit(job(tmp_path, "ok", 'echo "$CI_GREETING"'))
    bad = direct.submit(job(tmp_path, "bad", "exit 9"))
    slow = direct.submit(job(tmp_path, "slow", "sleep 60"))
    timed = direct.submit(job(tmp_path, "timed", "echo begun; sleep 60", time_limit="0:02"))
    assert (wait(direct, ok).state, wait(direct, ok).exit_code) == (JobState.COMPLETED, 0)
    assert (wait(direct, bad).state, wait(direct, bad).exit_code) == (JobState.FAILED, 9)
    assert (tmp_path / "logs" / "ok.out").read_text() == "hello from the submit host\n"
    assert [s.job_id for s in direct.find(f"{PREFIX}-slow")] == [slow]
    direct.cancel([slow], reason="run interrupted")
    cancelled = wait(direct, slow, timeout=20)
    assert (cancelled.state, cancelled.reason) == (JobState.CANCELLED, "run interrupted")
    fresh = DirectScheduler(LocalHost(), direct.state_dir).poll([slow])[slow]
    assert (fresh.state, fresh.reason) == (JobState.CANCELLED, "run interrupted")
    timed_out = wait(direct, timed, timeout=20)
    assert (timed_out.state, timed_out.reason) == (JobState.TIMEOUT, "TimeLimit")
    assert (tmp_path / "logs" / "timed.out").read_text() == "begun\n"
    assert direct.find(PREFIX) == []
