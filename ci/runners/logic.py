"""The allocator's decisions, as pure functions of what GitHub and Slurm say (no I/O here).

Demand is counted, never bound: each queued job is matched to one target (the target whose label
set equals the job's labels, else the smallest target whose labels contain them), and a target
gets as many runners as it has queued jobs, counting runners that are pending in Slurm, starting,
or idle. GitHub gives a job to any idle runner whose labels contain the job's, so a runner
started for one job may serve another (a job asking {a} may take the runner of a {a, b} target):
that only shows up as demand that is still there at the next poll, and another runner starts.
The surplus this leaves is cancelled while still pending, else at its target's idle timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ci.config.runners import Target


class Phase(StrEnum):
    CREATING = "creating"  # row written, JIT config and sbatch under way (or interrupted)
    PENDING = "pending"  # queued in Slurm
    RUNNING = "running"  # Slurm job running, the runner has taken no job yet (starting or idle)
    BUSY = "busy"  # the runner took a job (it is ephemeral: it serves no other)
    DONE = "done"  # served its job and ended
    FAILED = "failed"  # ended without serving a job (died before connecting, sbatch refused, abandoned)
    CANCELLED = "cancelled"  # cancelled by the allocator (surplus) or by someone else

    @property
    def live(self) -> bool:
        return self in (Phase.CREATING, Phase.PENDING, Phase.RUNNING, Phase.BUSY)

    @property
    def supply(self) -> bool:
        """Counts against demand: may still take a queued job."""
        return self in (Phase.CREATING, Phase.PENDING, Phase.RUNNING)


@dataclass(frozen=True)
class QueuedJob:
    id: int
    run_id: int
    labels: frozenset[str]
    name: str = ""
    created_at: float | None = None


def label_set(labels: Iterable[str]) -> frozenset[str]:
    """GitHub compares labels case-insensitively."""
    return frozenset(str(label).lower() for label in labels)


def match_target(labels: frozenset[str], targets: Sequence[Target]) -> Target | None:
    """The target with exactly these labels, else the one with the fewest labels containing them
    (the first configured among equals); None when no target can serve the job."""
    wanted = label_set(labels)
    for target in targets:
        if target.label_set == wanted:
            return target
    supersets = [target for target in targets if wanted <= target.label_set]
    if not supersets:
        return None
    return min(supersets, key=lambda target: len(target.label_set))  # min() keeps the first of equals


@dataclass
class Demand:
    per_target: dict[str, list[QueuedJob]] = field(default_factory=dict)
    unservable: list[QueuedJob] = field(default_factory=list)

    def count(self, target: str) -> int:
        return len(self.per_target.get(target, ()))


def count_demand(jobs: Iterable[QueuedJob], targets: Sequence[Target]) -> Demand:
    demand = Demand({target.name: [] for target in targets})
    for job in jobs:
        target = match_target(job.labels, targets)
        if target is None:
            demand.unservable.append(job)
        else:
            demand.per_target[target.name].append(job)
    return demand


@dataclass(frozen=True)
class RunnerView:
    """What a decision needs to know about one runner."""

    name: str
    target: str
    phase: Phase
    created: float
    idle_since: float | None = None  # when its Slurm job was first seen running with no job taken


@dataclass(frozen=True)
class Cancel:
    name: str
    reason: str


@dataclass
class Plan:
    start: dict[str, int] = field(default_factory=dict)
    cancel: list[Cancel] = field(default_factory=list)
    held_back: dict[str, str] = field(default_factory=dict)  # target -> why fewer started than needed


def decide(targets: Sequence[Target], demand: Demand, runners: Sequence[RunnerView], now: float,
           backoff_until: Mapping[str, float] | None = None) -> Plan:
    """How many runners to start per target and which to cancel, from the counts alone."""
    plan = Plan()
    backoff_until = backoff_until or {}
    known = {target.name for target in targets}
    for runner in runners:  # targets removed from the configuration: nothing will need these
        if runner.target not in known and runner.phase in (Phase.PENDING, Phase.RUNNING):
            plan.cancel.append(Cancel(runner.name, f"target {runner.target} is no longer configured"))
    for target in targets:
        mine = [runner for runner in runners if runner.target == target.name]
        supply = [runner for runner in mine if runner.phase.supply]
        active = [runner for runner in mine if runner.phase.live]
        wanted = demand.count(target.name)
        missing = wanted - len(supply)
        if missing > 0:
            room = target.max - len(active)
            count = min(missing, max(room, 0))
            until = backoff_until.get(target.name, 0.0)
            if count and until > now:
                plan.held_back[target.name] = f"backing off after failures for {until - now:.0f}s more"
                count = 0
            elif count < missing:
                plan.held_back[target.name] = f"at its max of {target.max} runners"
            if count:
                plan.start[target.name] = count
        elif missing < 0:
            surplus = -missing
            pending = sorted((r for r in supply if r.phase is Phase.PENDING), key=lambda r: -r.created)
            for runner in pending[:surplus]:
                plan.cancel.append(Cancel(runner.name, f"demand for {target.name} dropped"))
            surplus -= min(surplus, len(pending))
            idle = sorted((r for r in supply if r.phase is Phase.RUNNING and r.idle_since is not None
                           and now - r.idle_since >= target.idle_timeout), key=lambda r: float(r.idle_since or 0.0))
            for runner in idle[:surplus]:
                plan.cancel.append(Cancel(runner.name, f"idle for {now - (runner.idle_since or now):.0f}s "
                                                       f"(idle_timeout {target.idle_timeout:g}s) with no job "
                                                       f"for {target.name}"))
    return plan


@dataclass
class Backoff:
    """Exponential backoff per target after sbatch failures or runners dying before they connect."""

    base: float = 5.0
    cap: float = 300.0
    failures: dict[str, int] = field(default_factory=dict)
    until: dict[str, float] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)

    def failed(self, target: str, now: float, error: str) -> float:
        count = self.failures.get(target, 0) + 1
        self.failures[target] = count
        delay: float = min(self.base * 2.0 ** (count - 1), self.cap)
        self.until[target] = now + delay
        self.last_error[target] = error
        return delay

    def succeeded(self, target: str) -> None:
        self.failures.pop(target, None)
        self.until.pop(target, None)
        self.last_error.pop(target, None)
