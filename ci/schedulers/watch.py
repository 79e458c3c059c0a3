"""One poller for all jobs in flight: a single batched status query per interval.

Test steps of many images wait on their jobs at once; asking the scheduler once per job and
second would hammer slurmctld on a busy login node. The watcher asks once per interval for
every job it knows, and a failed query is retried at the next interval, never taken as a
failed job (ReFrame's habit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ci.shutdown import CancelToken

Poll = Callable[[Sequence[str]], Mapping[str, Any]]


class JobWatcher:
    """Wait for many jobs with one poll per interval."""

    def __init__(self, poll: Poll, interval: float = 2.0, on_error: Callable[[Exception], None] | None = None,
                 settled: Callable[[Any], bool] | None = None):
        self._poll = poll
        self._settled = settled or (lambda status: bool(getattr(status, "terminal", False)))
        self.interval = interval
        self._on_error = on_error
        self._lock = threading.Lock()
        self._waiting: dict[str, threading.Event] = {}
        self._status: dict[str, Any] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.errors = 0

    def __enter__(self) -> JobWatcher:
        self._thread = threading.Thread(target=self._loop, name="job-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait(self, job_id: str, timeout: float | None = None, cancel: CancelToken | None = None) -> Any:
        """Block until the job is settled (finished, or never to start); return its last status.

        With `cancel`, stop waiting as soon as the run is cancelled (raises ci.shutdown.Cancelled;
        the job itself is cancelled by whoever cancelled the run).
        """
        with self._lock:
            event = self._waiting.setdefault(job_id, threading.Event())
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not event.is_set():
            if cancel is not None:
                cancel.check()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} did not finish within {timeout}s")
            event.wait(0.5 if left is None else min(0.5, left))
        with self._lock:
            return self._status[job_id]

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pending = [job for job, event in self._waiting.items() if not event.is_set()]
            if pending:
                try:
                    statuses = self._poll(pending)
                    self.polls += 1
                except Exception as exc:  # transient scheduler trouble: try again next interval
                    self.errors += 1
                    if self._on_error is not None:
                        self._on_error(exc)
                    statuses = {}
                with self._lock:
                    for job, status in statuses.items():
                        self._status[job] = status
                        if self._settled(status) and job in self._waiting:
                            self._waiting[job].set()
            self._wake.wait(self.interval)
            self._wake.clear()
