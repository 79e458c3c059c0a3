"""What every batch scheduler offers the pipeline: submit, poll (batched), cancel, find.

Two backends implement it: Slurm (sbatch/squeue/scontrol/sacct/scancel) and "direct" (a
background process on the site host, for sites without a scheduler). States are normalised to
Slurm's vocabulary because that is what people read in a report. Each backend renders its own
job-script header (`directives`: Slurm's `#SBATCH` lines, none for direct) and its own task
launcher (`task_launch`: `srun -N.. -n..` for Slurm), so job scripts never assume Slurm.

`poll` takes many ids and asks the scheduler once, so one watcher thread (ci.schedulers.watch) can serve
every test step of a run, as ReFrame does, instead of N threads each asking Slurm about one job.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from ci.errors import SchedulerError
from ci.resources import Resources


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    REQUEUED = "REQUEUED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"  # the scheduler no longer knows the job and kept no record of its end

    @property
    def terminal(self) -> bool:
        return self not in _ACTIVE


_ACTIVE = {JobState.PENDING, JobState.RUNNING, JobState.COMPLETING, JobState.SUSPENDED, JobState.REQUEUED}

# Every state Slurm reports (squeue long names, sacct names, and the short codes) mapped to ours.
_SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING, "PD": JobState.PENDING, "CONFIGURING": JobState.PENDING, "CF": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "RH": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "R": JobState.RUNNING, "RESIZING": JobState.RUNNING, "RS": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING, "SI": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING, "SO": JobState.RUNNING,
    "COMPLETING": JobState.COMPLETING, "CG": JobState.COMPLETING,
    "SUSPENDED": JobState.SUSPENDED, "S": JobState.SUSPENDED, "STOPPED": JobState.SUSPENDED, "ST": JobState.SUSPENDED,
    "REQUEUED": JobState.REQUEUED, "RQ": JobState.REQUEUED, "REQUEUE_FED": JobState.REQUEUED,
    "RF": JobState.REQUEUED,
    "COMPLETED": JobState.COMPLETED, "CD": JobState.COMPLETED,
    "FAILED": JobState.FAILED, "F": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED, "SE": JobState.FAILED,
    "REVOKED": JobState.CANCELLED, "RV": JobState.CANCELLED,
    "CANCELLED": JobState.CANCELLED, "CA": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT, "TO": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY, "OOM": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL, "NF": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.BOOT_FAIL, "BF": JobState.BOOT_FAIL,
    "DEADLINE": JobState.DEADLINE, "DL": JobState.DEADLINE,
    "PREEMPTED": JobState.PREEMPTED, "PR": JobState.PREEMPTED,
}


def normalise_state(text: str) -> JobState:
    """`CANCELLED by 0`, `COMPLETED+`, `cancelled`... -> JobState; unknown words -> UNKNOWN."""
    word = text.strip().split(" ", 1)[0].rstrip("+").upper()
    return _SLURM_STATES.get(word, JobState.UNKNOWN)


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says about one job, in our words."""

    job_id: str
    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    name: str = ""
    raw_state: str = ""

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.COMPLETED and self.exit_code in (0, None)

    def describe(self) -> str:
        text = f"job {self.job_id} {self.state.value}"
        if self.exit_code is not None and self.terminal:
            text += f" (exit {self.exit_code}" + (f", signal {self.signal}" if self.signal else "") + ")"
        return text + (f": {self.reason}" if self.reason else "")

    def as_dict(self) -> dict[str, object]:
        return {"job_id": self.job_id, "state": self.state.value, "exit_code": self.exit_code, "signal": self.signal,
                "reason": self.reason, "name": self.name, "terminal": self.terminal}


@dataclass(frozen=True)
class JobSpec:
    """One batch job: a script, where it runs, where its output goes, and what it asks for.

    The script is either `script` (text, written by the scheduler to `<workdir>/<name>.sbatch`)
    or `script_path` (a file already on the host). `env` holds non-secret values only: with an
    SSH site they travel on the remote command line. `partition` is the site's default; a test's
    own `resources.partition` wins over it.
    """

    name: str
    workdir: str
    output: str
    script: str | None = None
    script_path: str | None = None
    resources: Resources = field(default_factory=Resources)
    account: str | None = None
    partition: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.script is None) == (self.script_path is None):
            raise SchedulerError(f"job {self.name}: give either the script text or the path of a script file")

    @property
    def effective_partition(self) -> str | None:
        return self.resources.partition or self.partition

    @property
    def time_limit(self) -> int | None:
        return time_limit_seconds(self.resources.time)


@runtime_checkable
class Scheduler(Protocol):
    """A batch system on a host."""

    name: str

    def submit(self, job: JobSpec) -> str:
        """Queue the job; returns its id."""
        ...

    def poll(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of each job, from one batched query. A failed query is not a failed job."""
        ...

    def cancel(self, ids: Sequence[str], reason: str = "") -> None:
        """Stop the jobs; `reason` is reported with their CANCELLED state."""
        ...

    def find(self, prefix: str) -> list[JobStatus]:
        """Unfinished jobs whose name starts with `prefix` (left behind by an interrupted run)."""
        ...

    def directives(self, job: JobSpec) -> list[str]:
        """The header lines of the job's script that say what it asks for (Slurm: `#SBATCH ...`)."""
        ...

    def task_launch(self, resources: Resources) -> list[str]:
        """The command prefix that starts a program as the job's tasks (`srun -N 1 -n 2`; [] = once)."""
        ...


# --------------------------------------------------------------------------------------------
# Helpers shared by the backends and the pipeline
# --------------------------------------------------------------------------------------------

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# Pending reasons Slurm gives for a job that will never start as submitted: waiting is pointless.
NEVER_STARTS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "AccountNotAllowed",
                "InvalidAccount", "InvalidQOS", "QOSNotAllowed", "BadConstraints", "DependencyNeverSatisfied")


def never_starts(status: JobStatus) -> bool:
    """A pending job whose reason says it cannot run as submitted (too big for the partition, ...)."""
    return status.state is JobState.PENDING and any(reason in status.reason for reason in NEVER_STARTS)


def settled(status: JobStatus) -> bool:
    """Nothing more will happen to this job without someone acting: finished, or never to start."""
    return status.terminal or never_starts(status)


def run_job_prefix(prefix: str, run_id: str) -> str:
    """What every job name of one run starts with: `cci-<run-id>-` (to find or cancel a run's jobs)."""
    return "-".join(_NAME_UNSAFE.sub("_", part) for part in (prefix, run_id) if part) + "-"


def job_name(prefix: str, run_id: str, image: str, test: str, *, arch: str = "") -> str:
    """`cci-<run-id>-<image>-<test>-<hash8>`: findable by the run's prefix, readable in squeue, and
    unique per (arch, image, test): the readable part alone is ambiguous (image `mpi` + test
    `hello-world` and image `mpi-hello` + test `world`; the same name under amd64/ and arm64/), so
    a short hash of the exact triple ends the name."""
    digest = hashlib.sha256("\0".join((arch, image, test)).encode("utf-8")).hexdigest()[:8]
    readable = "-".join(_NAME_UNSAFE.sub("_", part) for part in (image, test) if part)
    return run_job_prefix(prefix, run_id) + f"{readable}-{digest}"


def with_env(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`env NAME=value ... argv`: the job's (non-secret) variables as arguments, quoted once by the
    Host like any argument. (Passing them as a Host's `env` would put them through fabric's inline
    `export` on SSH sites, which does not quote values with spaces.)"""
    if not env:
        return list(argv)
    for name in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SchedulerError(f"'{name}' is not a valid environment variable name (JobSpec.env)")
    return ["env", *(f"{name}={value}" for name, value in env.items()), *argv]


def time_limit_seconds(value: str) -> int | None:
    """Slurm's --time forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in seconds; None = unlimited."""
    text = value.strip()
    if text.upper() in ("UNLIMITED", "INFINITE") or text in ("", "0", "-1"):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
        parts = [int(p) for p in text.split(":")]
        hours, minutes, seconds = [*parts, 0, 0][:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts[0], parts[1], parts[2]
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def decode_exit(text: str) -> tuple[int | None, int | None]:
    """Slurm's `3:0` (exit:signal) or squeue's raw wait status (`768`) -> (exit code, signal)."""
    value = text.strip()
    if not value or value in ("N/A", "(null)"):
        return None, None
    if ":" in value:
        code, _, signal = value.partition(":")
        try:
            return int(code), int(signal)
        except ValueError:
            return None, None
    try:
        status = int(value)
    except ValueError:
        return None, None
    return (status >> 8) & 0xFF, status & 0x7F
