"""The allocator's decisions: matching, counting, starting, cancelling, backing off (pure functions)."""

from __future__ import annotations

import pytest

from ci.config.runners import Target
from ci.runners.logic import (
    Backoff,
    Phase,
    QueuedJob,
    RunnerView,
    count_demand,
    decide,
    label_set,
    match_target,
)


def target(name: str, *labels: str, max: int = 10, idle_timeout: float = 60) -> Target:
    return Target(name=name, labels=labels, max=max, idle_timeout=idle_timeout)


TARGETS = (target("cpu", "self-hosted", "slurm"), target("gpu", "self-hosted", "slurm", "gpu"),
           target("gpu-big", "self-hosted", "slurm", "gpu", "big", "x"))


def job(number: int, *labels: str) -> QueuedJob:
    return QueuedJob(number, 1, label_set(labels))


@pytest.mark.parametrize(("labels", "expected"), [
    (("self-hosted", "slurm"), "cpu"),  # equal set
    (("SELF-HOSTED", "Slurm"), "cpu"),  # GitHub compares case-insensitively
    (("slurm",), "cpu"),  # the smallest superset
    (("gpu",), "gpu"),  # smallest superset, not the biggest
    (("self-hosted", "slurm", "gpu"), "gpu"),
    (("big",), "gpu-big"),
    (("gpu", "cuda"), None),  # no target has every label
])
def test_match_equal_set_else_smallest_superset(labels: tuple[str, ...], expected: str | None) -> None:
    found = match_target(label_set(labels), TARGETS)
    assert (found.name if found else None) == expected


def test_equal_set_wins_over_a_smaller_superset_and_config_order_breaks_ties() -> None:
    targets = (target("wide", "a", "b", "c"), target("exact", "a", "b", "c", "d"), target("first", "a", "z"),
               target("second", "a", "y"))
    assert match_target(label_set(["a", "b", "c", "d"]), targets).name == "exact"  # type: ignore[union-attr]
    assert match_target(label_set(["a"]), targets).name == "first"  # type: ignore[union-attr]


def test_demand_counts_per_target_and_reports_unservable_jobs() -> None:
    demand = count_demand([job(1, "slurm"), job(2, "slurm"), job(3, "gpu"), job(4, "windows")], TARGETS)
    assert (demand.count("cpu"), demand.count("gpu"), demand.count("gpu-big")) == (2, 1, 0)
    assert [j.id for j in demand.unservable] == [4]


def runner(name: str, target: str, phase: Phase, created: float = 0.0, idle_since: float | None = None) -> RunnerView:
    return RunnerView(name, target, phase, created, idle_since)


def test_starts_what_is_missing_counting_pending_starting_and_idle_not_busy() -> None:
    demand = count_demand([job(i, "slurm") for i in range(5)], TARGETS)
    runners = [runner("p", "cpu", Phase.PENDING), runner("c", "cpu", Phase.CREATING),
               runner("r", "cpu", Phase.RUNNING, idle_since=99), runner("b", "cpu", Phase.BUSY)]
    plan = decide(TARGETS, demand, runners, now=100)
    assert plan.start == {"cpu": 2} and plan.cancel == []


def test_max_caps_live_runners_busy_ones_included() -> None:
    targets = (target("cpu", "slurm", max=3),)
    demand = count_demand([job(i, "slurm") for i in range(5)], targets)
    plan = decide(targets, demand, [runner("b1", "cpu", Phase.BUSY), runner("b2", "cpu", Phase.BUSY)], now=0)
    assert plan.start == {"cpu": 1}
    assert "max of 3" in plan.held_back["cpu"]


def test_demand_drop_cancels_pending_newest_first_then_idle_past_their_timeout() -> None:
    targets = (target("cpu", "slurm", idle_timeout=30),)
    demand = count_demand([job(1, "slurm")], targets)
    runners = [runner("old", "cpu", Phase.PENDING, created=1), runner("new", "cpu", Phase.PENDING, created=5),
               runner("idle-long", "cpu", Phase.RUNNING, idle_since=10),
               runner("idle-short", "cpu", Phase.RUNNING, idle_since=90), runner("busy", "cpu", Phase.BUSY)]
    plan = decide(targets, demand, runners, now=100)
    # supply 4 (2 pending, 2 running) for demand 1: cancel both pending, then the one idle past 30 s
    assert [c.name for c in plan.cancel] == ["new", "old", "idle-long"]
    assert "dropped" in plan.cancel[0].reason and "idle" in plan.cancel[2].reason
    assert plan.start == {}


def test_a_stolen_runner_only_shows_as_demand_that_stays() -> None:
    """{a} took the {a,b} runner: the {a,b} job is still queued, its runner is busy: start another."""
    targets = (target("ab", "a", "b"), target("a", "a"))
    still_queued = count_demand([job(2, "a", "b")], targets)
    runners = [runner("ab-1", "ab", Phase.BUSY), runner("a-1", "a", Phase.RUNNING, idle_since=0)]
    plan = decide(targets, still_queued, runners, now=1)
    assert plan.start == {"ab": 1}
    assert plan.cancel == []  # the idle {a} runner waits for its idle timeout (60 s here)
    later = decide(targets, still_queued, [*runners, runner("ab-2", "ab", Phase.PENDING)], now=61)
    assert [c.name for c in later.cancel] == ["a-1"] and later.start == {}


def test_backoff_holds_starts_and_grows_exponentially_until_success() -> None:
    backoff = Backoff(base=5, cap=60)
    assert [backoff.failed("cpu", 0, "boom") for _ in range(5)] == [5, 10, 20, 40, 60]
    demand = count_demand([job(1, "slurm")], TARGETS)
    held = decide(TARGETS, demand, [], now=30, backoff_until=backoff.until)
    assert held.start == {} and "backing off" in held.held_back["cpu"]
    assert decide(TARGETS, demand, [], now=61, backoff_until=backoff.until).start == {"cpu": 1}
    backoff.succeeded("cpu")
    assert backoff.failed("cpu", 0, "again") == 5


def test_runners_of_a_removed_target_are_cancelled_unless_busy() -> None:
    plan = decide(TARGETS, count_demand([], TARGETS), [runner("x", "gone", Phase.PENDING),
                                                         runner("y", "gone", Phase.BUSY)], now=0)
    assert [c.name for c in plan.cancel] == ["x"]
