"""The allocator's polls against the emulated GitHub (HTTP) and a scripted Slurm (its commands' answers).

A poll reads two worlds that move on their own: GitHub's queued jobs and Slurm's runner jobs. A
stand-in runner can connect, take a job, finish it and end between the two reads; these tests make
that happen at a chosen point of one poll, deterministically, and check the allocator never starts
a runner the queued jobs do not warrant.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ci.config.runners import resolve_dirs
from ci.hosts import CommandResult
from ci.runners import control
from ci.runners.allocator import Allocator
from ci.runners.logic import Phase
from ci.runners.state import State
from ci.schedulers import SlurmScheduler
from tests.github_emulator import TOKEN, Emulator
from tests.github_emulator.testing import settings_for, target
from tests.support.http_emulator import Answer

LABELS = {"cpu": ["self-hosted", "slurm", "cpu"], "mem": ["self-hosted", "slurm", "mem"]}


@dataclass
class SlurmJob:
    id: str
    name: str
    script: str
    state: str = "PENDING"
    exit_code: str = ""


class ScriptedSlurm:
    """A login node whose sbatch, squeue, scancel and scontrol answer as Slurm 22.05's do (`-O` rows).

    Jobs only move when the test says: `run(job)` starts one; `serve(job)` plays the stand-in runner
    (tests/github_emulator/runner.py) with the JIT config the allocator wrote, then ends the job.
    `before_squeue` is called once before the next `squeue -j` is answered.
    """

    name = "login-node"

    def __init__(self) -> None:
        self.jobs: dict[str, SlurmJob] = {}
        self.files: dict[str, str] = {}
        self.before_squeue: Callable[[], None] | None = None

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult:
        argv = tuple(command)
        out = ""
        if argv[0] == "sbatch":
            name = next(word.split("=", 1)[1] for word in argv if word.startswith("--job-name="))
            job = SlurmJob(str(len(self.jobs) + 101), name, self.files[argv[-1]])
            self.jobs[job.id] = job
            out = f"{job.id}\n"
        elif argv[0] == "squeue":
            if "-j" in argv:
                hook, self.before_squeue = self.before_squeue, None
                if hook is not None:
                    hook()
                wanted = argv[argv.index("-j") + 1].split(",")
                shown = [self.jobs[i] for i in wanted if i in self.jobs]
            else:  # --me: what is still queued or running
                shown = [job for job in self.jobs.values() if job.state in ("PENDING", "RUNNING")]
            out = "".join(f"{job.id}|{job.state}|None|{job.exit_code}|{job.name}|\n" for job in shown)
        elif argv[0] == "scancel":
            for job_id in argv[1:]:
                if self.jobs[job_id].state in ("PENDING", "RUNNING"):
                    self.jobs[job_id].state, self.jobs[job_id].exit_code = "CANCELLED", "0:15"
        elif argv[0] not in ("mkdir", "chmod", "rm", "scontrol"):
            raise AssertionError(f"the allocator ran {argv}, which this scripted node does not know")
        return CommandResult(argv, 0, out, "")

    def write_text(self, remote: str, text: str, mode: int | None = None) -> None:
        self.files[remote] = text

    def read_text(self, remote: str) -> str:
        return self.files[remote]

    def exists(self, remote: str) -> bool:
        return remote in self.files

    def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None

    # -- what happens on the cluster, when the test says ------------------------------------------------

    def live(self) -> list[SlurmJob]:
        return [job for job in self.jobs.values() if job.state in ("PENDING", "RUNNING")]

    def start(self, job: SlurmJob) -> None:
        job.state = "RUNNING"

    def serve(self, job: SlurmJob) -> None:
        """The runner reads its config (the job script names the file), takes a job, completes it, ends."""
        path = re.search(r"^jit=(\S+)$", job.script, re.MULTILINE)
        assert path is not None, job.script
        config = json.loads(base64.b64decode(self.files.pop(path.group(1))))
        url, secret = config["url"], config["secret"]
        post(f"{url}/_emulator/runner/connect", {"secret": secret})
        taken = post(f"{url}/_emulator/runner/acquire", {"secret": secret})["job"]
        assert taken is not None, "the runner found no job to take"
        post(f"{url}/_emulator/runner/complete", {"secret": secret, "job_id": taken["id"]})
        job.state, job.exit_code = "COMPLETED", "0:0"


def post(url: str, data: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(data).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


class HookedEmulator(Emulator):
    """The GitHub emulator; `after_jobs` is called once right after a run's job list was answered."""

    def __init__(self) -> None:
        super().__init__()
        self.after_jobs: Callable[[], None] | None = None

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        answer = super().answer(method, target, headers, body)
        if method == "GET" and re.search(r"/actions/runs/\d+/jobs", target) and self.after_jobs is not None:
            hook, self.after_jobs = self.after_jobs, None
            hook()
        return answer


@pytest.fixture
def emulator() -> Iterator[HookedEmulator]:
    with HookedEmulator() as running:
        yield running


@pytest.fixture
def allocator(emulator: HookedEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Allocator]:
    monkeypatch.setenv("CI_GITHUB_TOKEN", TOKEN)
    settings = settings_for(emulator, tmp_path, [target(name, labels) for name, labels in LABELS.items()])
    assert settings.runners is not None
    folder, job_dir = resolve_dirs(settings.runners, settings.state_dir)
    slurm = ScriptedSlurm()
    github = control.github_actions(settings.runners)
    state = State(folder)
    yield Allocator(settings.runners, state=state, github=github, scheduler=SlurmScheduler(slurm), host=slurm,
                    job_dir=job_dir, clock=lambda: 10_000.0)  # time stands still: no idle timeout, no reconcile
    github.client.close()
    state.close()


def slurm_of(allocator: Allocator) -> ScriptedSlurm:
    host = allocator.host
    assert isinstance(host, ScriptedSlurm)
    return host


@pytest.mark.parametrize("moment", ["after GitHub listed the jobs", "before Slurm answered"])
def test_a_runner_that_serves_its_job_and_ends_within_one_poll_is_not_replaced(
        emulator: HookedEmulator, allocator: Allocator, moment: str) -> None:
    """One job per target; while a poll reads both worlds, the cpu runner takes its job, finishes and ends.

    Read in the wrong order, GitHub still says the cpu job is queued while Slurm already says its runner
    ended: a second cpu runner would start, for a job that is done (the flake of
    tests/integration/test_runners_slurm.py, 21 runners for 20 jobs).
    """
    slurm = slurm_of(allocator)
    emulator.add_run([{"labels": LABELS["cpu"]}, {"labels": LABELS["mem"]}])
    assert allocator.step().start == {"cpu": 1, "mem": 1}
    cpu, mem = sorted(slurm.live(), key=lambda job: ".cpu." not in job.name)
    slurm.start(cpu)
    slurm.start(mem)
    assert allocator.step().start == {}  # both still starting: nothing changed
    if moment == "after GitHub listed the jobs":
        emulator.after_jobs = lambda: slurm.serve(cpu)
    else:
        slurm.before_squeue = lambda: slurm.serve(cpu)
    racing = allocator.step()
    assert emulator.after_jobs is None and slurm.before_squeue is None, "the runner never raced the poll"
    assert cpu.state == "COMPLETED"
    assert racing.start == {} and racing.cancel == []
    slurm.serve(mem)
    for _ in range(3):
        assert allocator.step().start == {}
    assert emulator.summary()["success"] == 2 and emulator.summary()["served_twice"] == []
    assert len(emulator.github.registered) == 2, emulator.github.registered  # one runner per job, no more
    assert slurm.live() == [] and allocator.state.live() == []
    assert sorted(row.phase for row in allocator.state.all()) == [Phase.DONE, Phase.DONE]
