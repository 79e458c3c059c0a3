"""Progress while a run works: one line per state change, with the image's and the run's elapsed time.

Lines (not a redrawn screen) because most runs happen in CI logs, where a live display turns
into noise; in a terminal the same lines are coloured.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console

from ci.pipeline import Event, State

_STYLE = {State.RUNNING: "cyan", State.DONE: "green", State.FAILED: "bold red", State.SKIPPED: "yellow"}
_WORD = {State.RUNNING: "started", State.DONE: "done", State.FAILED: "FAILED", State.SKIPPED: "skipped"}


class ProgressPrinter:
    """An executor listener that narrates the run."""

    def __init__(self, console: Console, total: int):
        self.console = console
        self.total = total
        self.start = time.time()
        self.finished: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            name = event.image.split("/", 1)[-1]
            if not event.step:
                self.finished.add(event.image)
            elapsed = event.time - self.start
            took = f" in {event.duration:.1f}s" if event.state in (State.DONE, State.FAILED) else ""
            detail = f" ({event.detail})" if event.detail and event.state is not State.DONE else ""
            style = _STYLE.get(event.state, "")
            step = f"{event.step} " if event.step else "image "
            self.console.print(
                f"[dim]{elapsed:7.1f}s[/] [{len(self.finished)}/{self.total}] {name:<28} "
                f"{step}[{style}]{_WORD.get(event.state, event.state.value)}[/]{took}{detail}",
                highlight=False, soft_wrap=True,
            )
