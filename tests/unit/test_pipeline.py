"""The executor with plain Python steps: order, gates, capacities, failures and `always` steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from ci.errors import CIError, SiteError
from ci.pipeline.executor import Event, Executor, State, Step, StepResult, Work
from ci.shutdown import CancelToken


class Recorder:
    """Step functions that log their start and end, under a lock, in one shared timeline."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.intervals: list[tuple[str, str, str, float, float]] = []  # image, step, resource, start, end
        self.order: list[str] = []

    def step(self, image: str, name: str, resource: str = "build", seconds: float = 0.0,
             action: Callable[[], StepResult | None] | None = None, always: bool = False) -> Step:
        def run() -> StepResult | None:
            start = time.monotonic()
            with self.lock:
                self.order.append(f"{image}:{name}")
            try:
                if seconds:
                    time.sleep(seconds)
                return action() if action is not None else StepResult(detail=f"{name} ok")
            finally:
                with self.lock:
                    self.intervals.append((image, name, resource, start, time.monotonic()))
        return Step(name, resource, run, always=always)

    def max_overlap(self, resource: str | None = None) -> int:
        points = []
        for _, _, res, start, end in self.intervals:
            if resource is None or res == resource:
                points += [(start, 1), (end, -1)]
        current = peak = 0
        for _, delta in sorted(points, key=lambda p: (p[0], p[1])):  # ends before starts at equal times
            current += delta
            peak = max(peak, current)
        return peak

    def span(self, image: str, step: str) -> tuple[float, float]:
        (found,) = [(s, e) for i, n, _, s, e in self.intervals if i == image and n == step]
        return found


def fail(message: str = "broken") -> Callable[[], StepResult]:
    def run() -> StepResult:
        raise CIError(message)
    return run


def run(works: list[Work], capacities: dict[str, int] | None = None) -> tuple[dict, list[Event]]:
    events: list[Event] = []
    outcomes = Executor(capacities or {"build": 4, "test": 4}, [events.append]).run(works)
    return outcomes, events


def test_steps_of_an_image_run_in_order_and_images_follow_their_parents() -> None:
    rec = Recorder()
    works = [
        Work("a/leaf", [rec.step("leaf", "build"), rec.step("leaf", "test", "test")], parents=["a/mid"]),
        Work("a/mid", [rec.step("mid", "build"), rec.step("mid", "test", "test")], parents=["a/base"]),
        Work("a/base", [rec.step("base", "build", seconds=0.05), rec.step("base", "test", "test")]),
    ]
    outcomes, _ = run(works)
    assert {o.state for o in outcomes.values()} == {State.DONE}
    assert set(outcomes) == {"a/leaf", "a/mid", "a/base"}
    for image in ("base", "mid", "leaf"):
        assert rec.span(image, "build")[1] <= rec.span(image, "test")[0]
    assert rec.span("base", "build")[1] <= rec.span("mid", "build")[0]
    assert rec.span("mid", "build")[1] <= rec.span("leaf", "build")[0]
    assert outcomes["a/leaf"].detail == "test ok"
    assert set(outcomes["a/leaf"].steps) == {"build", "test"}


def test_child_starts_when_the_parents_gate_is_done_not_after_its_whole_chain() -> None:
    child_started = threading.Event()
    seen: dict[str, bool] = {}

    def slow_parent_test() -> StepResult:
        seen["child started during the parent's test"] = child_started.wait(timeout=5)
        return StepResult()

    def child_build() -> StepResult:
        child_started.set()
        return StepResult()

    works = [
        Work("a/parent", [Step("build", "build", lambda: None), Step("test", "test", slow_parent_test)]),
        Work("a/child", [Step("build", "build", child_build)], parents=["a/parent"]),
    ]
    outcomes, _ = run(works)
    assert seen == {"child started during the parent's test": True}
    assert outcomes["a/child"].state is State.DONE


def test_an_images_gate_names_its_own_step_that_releases_its_children() -> None:
    rec = Recorder()
    works = [
        Work("a/parent", [rec.step("parent", "build"), rec.step("parent", "push", "test", seconds=0.05)],
             gate="push"),
        Work("a/child", [rec.step("child", "build")], parents=["a/parent"]),
    ]
    run(works)
    assert rec.span("parent", "push")[1] <= rec.span("child", "build")[0]


@pytest.mark.parametrize(("capacity", "images"), [(1, 4), (2, 6), (3, 7)])
def test_capacity_per_resource_is_never_exceeded(capacity: int, images: int) -> None:
    rec = Recorder()
    works = [Work(f"a/i{n}", [rec.step(f"i{n}", "build", seconds=0.1),
                              rec.step(f"i{n}", "test", "test", seconds=0.1)])
             for n in range(images)]
    outcomes, _ = run(works, {"build": capacity, "test": 1})
    assert all(o.state is State.DONE for o in outcomes.values())
    assert rec.max_overlap("build") == capacity, "the limit is used fully but never exceeded"
    assert rec.max_overlap("test") == 1
    assert rec.max_overlap() > capacity, "different resources run side by side"


def test_failure_skips_descendants_while_unrelated_images_finish() -> None:
    rec = Recorder()
    works = [
        Work("a/base", [rec.step("base", "build", action=fail("compiler exploded"))]),
        Work("a/mid", [rec.step("mid", "build")], parents=["a/base"]),
        Work("a/leaf", [rec.step("leaf", "build")], parents=["a/mid"]),
        Work("a/other", [rec.step("other", "build", seconds=0.05), rec.step("other", "test", "test")]),
    ]
    outcomes, events = run(works)
    assert outcomes["a/base"].state is State.FAILED
    assert outcomes["a/base"].detail == "build: compiler exploded"
    assert (outcomes["a/mid"].state, outcomes["a/mid"].detail) == (State.SKIPPED, "parent base failed")
    assert (outcomes["a/leaf"].state, outcomes["a/leaf"].detail) == (State.SKIPPED, "parent mid skipped")
    assert outcomes["a/other"].state is State.DONE
    ran = {(image, step) for image, step, *_ in rec.intervals}
    assert ran == {("base", "build"), ("other", "build"), ("other", "test")}
    skipped = [(e.image, e.detail) for e in events if e.state is State.SKIPPED]
    assert skipped == [("a/mid", "parent base failed"), ("a/leaf", "parent mid skipped")]


def test_failure_after_the_gate_does_not_skip_children() -> None:
    works = [
        Work("a/parent", [Step("build", "build", lambda: None), Step("test", "test", fail("test failed"))]),
        Work("a/child", [Step("build", "build", lambda: None)], parents=["a/parent"]),
    ]
    outcomes, _ = run(works)
    assert outcomes["a/parent"].state is State.FAILED
    assert outcomes["a/child"].state is State.DONE


def test_always_steps_run_after_a_failure_and_the_others_do_not() -> None:
    rec = Recorder()
    works = [Work("a/img", [
        rec.step("img", "build"),
        rec.step("img", "test", "test", action=lambda: StepResult(detail="2 of 3 patterns", failed=True)),
        rec.step("img", "collect", "test"),
        rec.step("img", "promote", "build", always=True),
    ])]
    outcomes, events = run(works)
    assert rec.order == ["img:build", "img:test", "img:promote"]
    outcome = outcomes["a/img"]
    assert outcome.state is State.FAILED
    assert outcome.detail == "test: 2 of 3 patterns"
    assert outcome.steps["promote"].state is State.DONE
    assert "collect" not in outcome.steps
    assert [(e.step, e.state) for e in events if e.step == "" and e.image == "a/img"] == [("", State.FAILED)]


def test_exceptions_become_failed_events_with_the_message() -> None:
    def bug() -> StepResult:
        raise ValueError("list index out of range")

    def site_down() -> StepResult:
        raise SiteError("site lumi is locked by run 42")

    outcomes, events = run([Work("a/bug", [Step("build", "build", bug)]),
                            Work("a/site", [Step("build", "build", site_down)])])
    failed = {e.image: e for e in events if e.step and e.state is State.FAILED}
    assert failed["a/bug"].detail == "ValueError: list index out of range"
    assert "Traceback" in failed["a/bug"].data["traceback"]
    assert failed["a/site"].detail == "site lumi is locked by run 42"
    assert outcomes["a/bug"].detail == "build: ValueError: list index out of range"
    assert outcomes["a/site"].state is State.FAILED


def test_step_result_data_reaches_the_events() -> None:
    result = StepResult(detail="built x:1", data={"tag": "x:1"})
    outcomes, events = run([Work("a/img", [Step("build", "build", lambda: result)])])
    (done,) = [e for e in events if e.step == "build" and e.state is State.DONE]
    assert (done.detail, dict(done.data)) == ("built x:1", {"tag": "x:1"})
    assert done.duration >= 0
    assert outcomes["a/img"].detail == "built x:1"


def test_events_bracket_each_step_and_image() -> None:
    steps = [Step("build", "build", lambda: None), Step("test", "test", lambda: None)]
    _, events = run([Work("a/img", steps)])
    assert [(e.step, e.state) for e in events] == [
        ("build", State.RUNNING), ("build", State.DONE), ("test", State.RUNNING), ("test", State.DONE),
        ("", State.DONE)]
    assert [e.time for e in events] == sorted(e.time for e in events)


def test_parents_outside_the_run_do_not_block() -> None:
    outcomes, _ = run([Work("a/child", [Step("build", "build", lambda: None)], parents=["a/already-built"])])
    assert outcomes["a/child"].state is State.DONE


def test_work_without_steps_is_done_and_opens_its_gate() -> None:
    outcomes, _ = run([Work("a/empty", []), Work("a/child", [Step("build", "build", lambda: None)],
                                                 parents=["a/empty"])])
    assert outcomes["a/empty"].state is State.DONE
    assert outcomes["a/child"].state is State.DONE


def test_images_with_more_descendants_start_first() -> None:
    rec = Recorder()
    works = [Work("a/lonely", [rec.step("lonely", "build")]),
             Work("a/root", [rec.step("root", "build")]),
             Work("a/kid", [rec.step("kid", "build")], parents=["a/root"])]
    run(works, {"build": 1, "test": 1})
    assert rec.order == ["root:build", "kid:build", "lonely:build"]


def test_capacity_below_one_is_refused() -> None:
    with pytest.raises(CIError, match="capacity of at least 1"):
        Executor({"build": 0})


def test_unknown_resource_is_refused() -> None:
    with pytest.raises(CIError, match="unknown resource gpu"):
        Executor({"build": 1}).run([Work("a/x", [Step("build", "gpu", lambda: None)])])


# -- cancellation -----------------------------------------------------------------------------------


def test_a_cancelled_run_starts_nothing_more_and_stops_its_waiting_steps() -> None:
    token = CancelToken()
    waiting = threading.Event()

    def waits_for_a_job() -> StepResult:
        waiting.set()
        while not token.wait(0.05):
            pass
        token.check()  # what a step waiting for jobs does (JobWatcher.wait)
        return StepResult()

    def cancel_soon() -> None:
        waiting.wait(5)
        token.cancel("SIGTERM received")

    rec = Recorder()
    works = [
        Work("a/waiter", [Step("test", "test", waits_for_a_job), rec.step("waiter", "promote", "test", always=True)]),
        Work("a/queued", [rec.step("queued", "build")], parents=["a/waiter"]),
    ]
    works[0] = Work("a/waiter", works[0].steps, gate="test")
    threading.Thread(target=cancel_soon, daemon=True).start()
    events: list[Event] = []
    started = time.monotonic()
    outcomes = Executor({"build": 1, "test": 1}, [events.append], cancel=token).run(
        [works[0], works[1]])
    assert time.monotonic() - started < 5
    assert outcomes["a/waiter"].state is State.CANCELLED
    assert outcomes["a/waiter"].steps["test"].state is State.CANCELLED
    assert "promote" not in outcomes["a/waiter"].steps, "nothing is promoted after a cancellation"
    assert outcomes["a/queued"].state is State.CANCELLED and "SIGTERM received" in outcomes["a/queued"].detail
    assert rec.order == []


def test_a_cancelled_token_before_the_run_runs_nothing() -> None:
    token = CancelToken()
    token.cancel("shutting down")
    rec = Recorder()
    outcomes = Executor({"build": 2}, cancel=token).run([Work("a/x", [rec.step("x", "build")])])
    assert rec.order == [] and outcomes["a/x"].state is State.CANCELLED
