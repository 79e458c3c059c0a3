"""Schedule arithmetic for the pipeline benchmark (DESIGN.md section 7).

From one run's measured step durations: the lower bound of any schedule's makespan,
`max(critical path, max_r(sum of work on r / capacity of r))`, and the makespan a
stage-synchronous pipeline (every build, then every transfer, ...) would have had with the
same durations and the same capacities.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

STAGES = ("build", "transfer", "convert", "test", "promote")


def critical_path(durations: Mapping[str, Mapping[str, float]], parents: Mapping[str, Sequence[str]]) -> float:
    """Longest chain: a child's build waits for its parents' builds; an image's steps run in order."""
    build_end: dict[str, float] = {}

    def end_of_build(image: str) -> float:
        if image not in build_end:
            ready = max((end_of_build(p) for p in parents.get(image, ()) if p in durations), default=0.0)
            build_end[image] = ready + durations[image].get("build", 0.0)
        return build_end[image]

    return max((end_of_build(image) + sum(d for step, d in durations[image].items() if step != "build")
                for image in durations), default=0.0)


def resource_bound(durations: Mapping[str, Mapping[str, float]], capacities: Mapping[str, int]) -> float:
    totals: dict[str, float] = {}
    for steps in durations.values():
        for step, value in steps.items():
            totals[step] = totals.get(step, 0.0) + value
    return max((total / capacities.get(step, 1) for step, total in totals.items()), default=0.0)


def lower_bound(durations: Mapping[str, Mapping[str, float]], parents: Mapping[str, Sequence[str]],
                capacities: Mapping[str, int]) -> float:
    return max(critical_path(durations, parents), resource_bound(durations, capacities))


def _list_schedule(tasks: Mapping[str, float], deps: Mapping[str, Sequence[str]], capacity: int, start: float) -> float:
    """Greedy list scheduling of one stage: longest task first among the ready ones."""
    done_at: dict[str, float] = {}
    pending = dict(tasks)
    running: list[tuple[float, str]] = []
    now = start
    while pending or running:
        ready = sorted((name for name in pending if all(d in done_at and done_at[d] <= now
                                                        for d in deps.get(name, ()) if d in tasks)),
                       key=lambda name: -pending[name])
        while ready and len(running) < capacity:
            name = ready.pop(0)
            heapq.heappush(running, (now + pending.pop(name), name))
        if not running:
            raise ValueError("the dependencies of this stage form a cycle")
        now, name = heapq.heappop(running)
        done_at[name] = now
    return now


def stage_synchronous(durations: Mapping[str, Mapping[str, float]], parents: Mapping[str, Sequence[str]],
                      capacities: Mapping[str, int]) -> float:
    """Makespan when each stage starts only after the previous one finished for every image."""
    now = 0.0
    for stage in STAGES:
        tasks = {image: steps[stage] for image, steps in durations.items() if stage in steps}
        if tasks:
            deps = parents if stage == "build" else {}
            now = _list_schedule(tasks, deps, capacities.get(stage, 1), now)
    return now
