"""Batch schedulers behind one small interface (see `ci.schedulers.base.Scheduler`).

`select_scheduler("auto", host)` uses Slurm when `sbatch` and `squeue` answer on the site host,
and runs jobs directly as background processes otherwise.

Where this package sits among the others: docs/architecture.md.
"""

from __future__ import annotations

from ci.errors import SchedulerError
from ci.hosts import Host
from ci.schedulers.base import JobSpec, JobState, JobStatus, Scheduler, job_name, normalise_state, time_limit_seconds
from ci.schedulers.direct import DirectScheduler
from ci.schedulers.slurm import SlurmScheduler

SCHEDULERS = ("slurm", "direct")


def slurm_available(host: Host) -> bool:
    """Slurm's client commands are installed and the controller answers."""
    probe = 'command -v sbatch >/dev/null 2>&1 && squeue -h -u "$(id -un)" -o %i >/dev/null 2>&1'
    return host.run(["sh", "-c", probe], check=False, timeout=30).ok


def select_scheduler(name: str | None, host: Host, *, state_dir: str | None = None, retries: int = 4,
                     backoff: float = 1.0, unreachable_after: float = 600.0,
                     missing_grace: float = 60.0) -> SlurmScheduler | DirectScheduler:
    """The configured scheduler, or with "auto" Slurm when it answers on the host, else direct.

    `state_dir` is where the direct scheduler keeps its job folders (default ~/.local/state/...);
    The other options tune Slurm's tolerance of a slow or restarting controller (see SlurmScheduler).
    """
    wanted = (name or "auto").strip().lower()
    if wanted == "auto":
        wanted = "slurm" if slurm_available(host) else "direct"
    if wanted == "slurm":
        return SlurmScheduler(host, retries=retries, backoff=backoff, unreachable_after=unreachable_after,
                              missing_grace=missing_grace)
    if wanted == "direct":
        return DirectScheduler(host, state_dir)
    raise SchedulerError(f"unknown scheduler '{name}' (ci.site.scheduler); choose slurm, direct or auto")


__all__ = [
    "SCHEDULERS", "DirectScheduler", "JobSpec", "JobState", "JobStatus", "Scheduler", "SlurmScheduler", "job_name",
    "normalise_state", "select_scheduler", "slurm_available", "time_limit_seconds",
]
