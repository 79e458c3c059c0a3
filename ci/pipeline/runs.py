"""A run's folder: its id, logs and event stream, so a run can be inspected from its folder alone.

Modelled on ansible-runner's artifact folders: `runs/<run-id>/` holds `events.jsonl` (one JSON
object per step event, appended as they happen), `logs/`, and the reports written at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ci.pipeline.executor import Event, Note


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class RunFolder:
    """`<state>/runs/<run-id>/`: logs, events and reports of one run."""

    def __init__(self, runs_root: Path, run_id: str | None = None):
        self.run_id = run_id or new_run_id()
        self.path = runs_root / self.run_id
        self.logs = self.path / "logs"
        self.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)  # logs and reports of a run are its user's alone
        self._events = self.path / "events.jsonl"
        self._lock = threading.Lock()

    def log_path(self, key: str, step: str) -> Path:
        """`logs/<arch>/<name>.<step>.log` for an image key `<arch>/<name>` (the same name under two
        architectures gets two logs)."""
        path = self.logs / f"{key}.{step}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def record(self, event: Event | Note) -> None:
        """Append one step event (notes are for people); each line is flushed and synced, so a crash
        loses at most the line being written."""
        if isinstance(event, Note):
            return
        line = json.dumps({**asdict(event), "state": event.state.value}, default=str)
        with self._lock, self._events.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def events(self) -> list[dict[str, Any]]:
        if not self._events.exists():
            return []
        out = []
        for line in self._events.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return out

    def write(self, name: str, text: str) -> Path:
        """Write a report atomically: readers see the old file or the new one, never half of it."""
        target = self.path / name
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
        return target
