"""Run each image's chain of steps as soon as its inputs are ready, within per-resource limits.

The schedule is pipelined, not stage-synchronous (docs/architecture.md): the test of image A
runs while image B still builds, and a child's build starts the moment its parent's image
exists. Each resource (builds, transfers, conversions, jobs) has its own capacity. A failure
stops that image's chain (except steps marked `always`, such as promotion to failed/), and
marks the images built on it as skipped, while the others go on.

Cancellation (`cancel`, a `ci.shutdown.CancelToken`): once it is set no step starts any more, the
images not yet finished end as `cancelled`, and the executor waits for the steps already running
(each of them honours the token itself, e.g. while it waits for batch jobs). Nothing is promoted
after a cancellation, so a cancelled run never leaves half a result behind.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ci.errors import CIError
from ci.shutdown import Cancelled, CancelToken


class State(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class StepResult:
    """What a step reports beyond success: a short detail for the table, data for the report."""

    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    failed: bool = False


@dataclass(frozen=True)
class Step:
    """One unit of work for one image, bound to a resource with limited capacity."""

    name: str
    resource: str
    run: Callable[[], StepResult | None]
    always: bool = False  # runs even after an earlier step of the same image failed


@dataclass
class Work:
    """An image's chain of steps, and the images it is built on (it starts once their gates opened)."""

    key: str
    steps: Sequence[Step]
    parents: Sequence[str] = ()
    gate: str = "build"  # this image's step whose end lets the images built on it start


@dataclass(frozen=True)
class Event:
    time: float
    image: str
    step: str
    state: State
    detail: str = ""
    duration: float = 0.0
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    """A message about the run as a whole (what was planned, a retried query, a taken-over lock).

    `level` is "info" or "warning"; `data` carries the facts for machines (e.g. the run id and how
    many images have work, in the first note of a run).
    """

    time: float
    text: str
    level: str = "info"
    data: Mapping[str, Any] = field(default_factory=dict)


Listener = Callable[[Event | Note], None]


@dataclass
class ImageOutcome:
    key: str
    state: State = State.PENDING
    detail: str = ""
    steps: dict[str, Event] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None


class Executor:
    """A small DAG scheduler: one thread per running step, capacity-limited per resource."""

    def __init__(self, capacities: Mapping[str, int], listeners: Sequence[Listener] = (),
                 cancel: CancelToken | None = None):
        if any(value < 1 for value in capacities.values()):
            raise CIError("every resource needs a capacity of at least 1 (check --jobs and ci.limits)")
        self.capacities = dict(capacities)
        self.listeners = list(listeners)
        self.cancel = cancel or CancelToken()
        self._lock = threading.Lock()

    def _emit(self, event: Event) -> None:
        with self._lock:
            for listener in self.listeners:
                listener(event)

    def run(self, works: Sequence[Work]) -> dict[str, ImageOutcome]:
        by_key = {work.key: work for work in works}
        outcomes = {work.key: ImageOutcome(work.key) for work in works}
        children: dict[str, list[str]] = {key: [] for key in by_key}
        for work in works:
            for parent in work.parents:
                if parent in children:
                    children[parent].append(work.key)
        priority = {key: self._descendants(key, children) for key in by_key}
        next_step = {key: 0 for key in by_key}
        failed_step: dict[str, bool] = {key: False for key in by_key}
        gates_open: dict[str, bool] = {key: False for key in by_key}
        in_use = {resource: 0 for resource in self.capacities}
        ready: list[str] = []
        started_keys: set[str] = set()
        running: dict[Future[StepResult | None], tuple[str, Step, float]] = {}

        def parent_state(key: str) -> tuple[bool, str | None]:
            """(all gates open, name of a parent that can no longer open its gate)."""
            for parent in by_key[key].parents:
                if parent not in by_key:
                    continue
                if not gates_open[parent]:
                    if outcomes[parent].state in (State.FAILED, State.SKIPPED):
                        return False, parent
                    return False, None
            return True, None

        def skip(key: str, reason: str) -> None:
            outcome = outcomes[key]
            outcome.state = State.SKIPPED
            outcome.detail = reason
            self._emit(Event(time.time(), key, "", State.SKIPPED, reason))
            for child in children[key]:
                if outcomes[child].state is State.PENDING and child not in started_keys:
                    skip(child, f"parent {key.split('/', 1)[-1]} {outcome.state.value}")

        def consider(key: str) -> None:
            if key in started_keys or outcomes[key].state is not State.PENDING:
                return
            ok, blocker = parent_state(key)
            if blocker is not None:
                skip(key, f"parent {blocker.split('/', 1)[-1]} {outcomes[blocker].state.value}")
            elif ok:
                started_keys.add(key)
                ready.append(key)

        def open_gate(key: str) -> None:
            gates_open[key] = True
            for child in children[key]:
                consider(child)

        def finish(key: str) -> None:
            outcome = outcomes[key]
            outcome.finished = time.time()
            outcome.state = State.FAILED if failed_step[key] else State.DONE
            self._emit(Event(outcome.finished, key, "", outcome.state, outcome.detail,
                             outcome.finished - (outcome.started or outcome.finished)))
            if not gates_open[key]:
                if outcome.state is State.DONE:
                    open_gate(key)
                else:
                    for child in children[key]:
                        if outcomes[child].state is State.PENDING and child not in started_keys:
                            skip(child, f"parent {key.split('/', 1)[-1]} failed")

        def advance(key: str) -> None:
            """Move past finished steps; queue the next runnable one or finish the image."""
            work = by_key[key]
            while next_step[key] < len(work.steps):
                step = work.steps[next_step[key]]
                if failed_step[key] and not step.always:
                    next_step[key] += 1
                    continue
                ready.append(key)
                return
            finish(key)

        for work in works:
            if not work.steps:
                gates_open[work.key] = True
        for work in works:
            if work.steps:
                consider(work.key)
            else:
                outcomes[work.key].state = State.DONE

        def cancel_rest() -> None:
            reason = f"cancelled: {self.cancel.reason}" if self.cancel.reason else "cancelled"
            for key, outcome in outcomes.items():
                if outcome.state in (State.PENDING, State.RUNNING) and not any(
                        running_key == key for running_key, _, _ in running.values()):
                    outcome.state = State.CANCELLED
                    outcome.detail = outcome.detail or reason
                    outcome.finished = time.time()
                    self._emit(Event(outcome.finished, key, "", State.CANCELLED, reason))
            ready.clear()

        with ThreadPoolExecutor(max_workers=max(1, sum(self.capacities.values()))) as pool:
            while ready or running:
                if self.cancel.is_set():
                    cancel_rest()
                    if not running:
                        break
                ready.sort(key=lambda k: (-priority[k], k))
                for key in list(ready):
                    step = by_key[key].steps[next_step[key]]
                    if step.resource not in in_use:
                        raise CIError(f"step {step.name} uses unknown resource {step.resource}")
                    if in_use[step.resource] >= self.capacities[step.resource]:
                        continue
                    ready.remove(key)
                    in_use[step.resource] += 1
                    outcome = outcomes[key]
                    outcome.state = State.RUNNING
                    started = time.time()
                    outcome.started = outcome.started or started
                    self._emit(Event(started, key, step.name, State.RUNNING))
                    running[pool.submit(step.run)] = (key, step, started)
                if not running:
                    break
                # Wake up now and then to notice a cancellation while every running step waits.
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    key, step, started = running.pop(future)
                    in_use[step.resource] -= 1
                    ended = time.time()
                    event = self._result_event(key, step, started, ended, future)
                    outcomes[key].steps[step.name] = event
                    if event.state in (State.FAILED, State.CANCELLED):
                        failed_step[key] = True
                        outcomes[key].detail = f"{step.name}: {event.detail}"
                    elif not failed_step[key]:
                        outcomes[key].detail = event.detail or outcomes[key].detail
                    self._emit(event)
                    next_step[key] += 1
                    if step.name == by_key[key].gate and event.state is State.DONE:
                        open_gate(key)
                    if outcomes[key].state is State.RUNNING:
                        outcomes[key].state = State.PENDING
                    if self.cancel.is_set() and outcomes[key].state is State.PENDING:
                        continue  # cancel_rest() files it as cancelled once nothing of it runs any more
                    advance(key)
            if self.cancel.is_set():
                cancel_rest()
        return outcomes

    @staticmethod
    def _result_event(key: str, step: Step, started: float, ended: float, future: Future[StepResult | None]) -> Event:
        try:
            result = future.result() or StepResult()
        except Cancelled as exc:
            return Event(ended, key, step.name, State.CANCELLED, str(exc), ended - started)
        except CIError as exc:
            return Event(ended, key, step.name, State.FAILED, str(exc), ended - started)
        except Exception as exc:  # a bug or an unexpected backend error: keep the run going, keep the trace
            detail = f"{type(exc).__name__}: {exc}"
            return Event(ended, key, step.name, State.FAILED, detail, ended - started,
                         {"traceback": traceback.format_exc()})
        state = State.FAILED if result.failed else State.DONE
        return Event(ended, key, step.name, state, result.detail, ended - started, dict(result.data))

    @staticmethod
    def _descendants(key: str, children: Mapping[str, Sequence[str]]) -> int:
        seen: set[str] = set()
        todo = list(children.get(key, ()))
        while todo:
            child = todo.pop()
            if child not in seen:
                seen.add(child)
                todo.extend(children.get(child, ()))
        return len(seen)
