"""Batch schedulers behind one small interface (see `ci.schedulers.base.Scheduler`).

`SCHEDULERS` maps a name to a factory, as `ci.engines.ENGINES` does for engines: adding a
scheduler is one module plus one line here. `select_scheduler("auto", host)` uses Slurm when
`sbatch` and `squeue` answer on the site host, and runs jobs directly as background processes
otherwise.

Where this package sits among the others: docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ci.errors import SchedulerError
from ci.hosts import Host
from ci.resources import Resources
from ci.schedulers.base import (
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
    job_name,
    normalise_state,
    run_job_prefix,
    time_limit_seconds,
)
from ci.schedulers.direct import DirectScheduler
from ci.schedulers.slurm import SlurmScheduler


@dataclass(frozen=True)
class SchedulerOptions:
    """Tuning every factory receives; each backend reads what it understands.

    `state_dir`: where the direct scheduler keeps its job folders (default ~/.local/state/...);
    the others tune Slurm's tolerance of a slow or restarting controller (see SlurmScheduler).
    """

    state_dir: str | None = None
    retries: int = 4
    backoff: float = 1.0
    unreachable_after: float = 600.0
    missing_grace: float = 60.0


def _slurm(host: Host, options: SchedulerOptions) -> Scheduler:
    return SlurmScheduler(host, retries=options.retries, backoff=options.backoff,
                          unreachable_after=options.unreachable_after, missing_grace=options.missing_grace)


def _direct(host: Host, options: SchedulerOptions) -> Scheduler:
    return DirectScheduler(host, options.state_dir)


SCHEDULERS: dict[str, Callable[[Host, SchedulerOptions], Scheduler]] = {"slurm": _slurm, "direct": _direct}


def slurm_available(host: Host) -> bool:
    """Slurm's client commands are installed and the controller answers."""
    probe = 'command -v sbatch >/dev/null 2>&1 && squeue -h -u "$(id -un)" -o %i >/dev/null 2>&1'
    return host.run(["sh", "-c", probe], check=False, timeout=30).ok


def select_scheduler(name: str | None, host: Host, *, state_dir: str | None = None, retries: int = 4,
                     backoff: float = 1.0, unreachable_after: float = 600.0, missing_grace: float = 60.0) -> Scheduler:
    """The configured scheduler, or with "auto" Slurm when it answers on the host, else direct.

    The keywords are `SchedulerOptions`' (where the direct scheduler keeps its job folders; how
    patient Slurm's client is with a slow or restarting controller).
    """
    wanted = (name or "auto").strip().lower()
    if wanted == "auto":
        wanted = "slurm" if slurm_available(host) else "direct"
    factory = SCHEDULERS.get(wanted)
    if factory is None:
        raise SchedulerError(f"unknown scheduler '{name}' (ci.site.scheduler); "
                             f"choose {', '.join(SCHEDULERS)} or auto")
    return factory(host, SchedulerOptions(state_dir=state_dir, retries=retries, backoff=backoff,
                                          unreachable_after=unreachable_after, missing_grace=missing_grace))


__all__ = [
    "SCHEDULERS", "DirectScheduler", "JobSpec", "JobState", "JobStatus", "Resources", "Scheduler", "SchedulerOptions",
    "SlurmScheduler", "job_name", "normalise_state", "run_job_prefix", "select_scheduler", "slurm_available",
    "time_limit_seconds",
]
