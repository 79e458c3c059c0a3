"""Progress while a run works: one line per state change, with the image's and the run's elapsed time.

A listener (`ci.pipeline.executor.Listener`) that the command line attaches to a run; `ci.api` itself never
prints. Lines (not a redrawn screen) because most runs happen in CI logs, where a live display
turns into noise; in a terminal the same lines are coloured. Every line is a `Text`
(`ci.pipeline.terminal.styled`), so rich markup in a definition's name or a message cannot break
the output, whichever console the caller hands in.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console

from ci.pipeline.executor import Event, Note, State
from ci.pipeline.terminal import styled

_STYLE = {State.RUNNING: "cyan", State.DONE: "green", State.FAILED: "bold red", State.SKIPPED: "yellow",
          State.CANCELLED: "yellow"}
_WORD = {State.RUNNING: "started", State.DONE: "done", State.FAILED: "FAILED", State.SKIPPED: "skipped",
         State.CANCELLED: "cancelled"}


class ProgressPrinter:
    """Narrates a run on a console: notes as they come, and every step event."""

    def __init__(self, console: Console, total: int = 0):
        self.console = console
        self.total = total
        self.start = time.time()
        self.finished: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, event: Event | Note) -> None:
        with self._lock:
            if isinstance(event, Note):
                self._note(event)
            else:
                self._event(event)

    def _note(self, note: Note) -> None:
        if "work" in note.data:
            self.total = int(note.data["work"])
            self.start = note.time
        style = "yellow" if note.level == "warning" else ""
        self.console.print(styled((note.text, style)), highlight=False, soft_wrap=True)

    def _event(self, event: Event) -> None:
        name = event.image.split("/", 1)[-1]
        if not event.step:
            self.finished.add(event.image)
        elapsed = event.time - self.start
        took = f" in {event.duration:.1f}s" if event.state in (State.DONE, State.FAILED) else ""
        detail = f" ({event.detail})" if event.detail and event.state is not State.DONE else ""
        style = _STYLE.get(event.state, "")
        step = f"{event.step} " if event.step else "image "
        self.console.print(
            styled((f"{elapsed:7.1f}s", "dim"), f" [{len(self.finished)}/{self.total}] {name:<28} {step}",
                   (_WORD.get(event.state, event.state.value), style), f"{took}{detail}"),
            highlight=False, soft_wrap=True,
        )
