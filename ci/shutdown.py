"""Stopping a run on request: cancel tokens, and the signal handling every front end shares.

A long-running caller (the runner allocator, the image service) runs pipelines through `ci.api`
with a `CancelToken` of its own and calls `token.cancel("why")` to stop one: the executor starts
no further step, test steps stop waiting for their batch jobs, the run's jobs are cancelled, and
its site lock is released. Nothing is promoted after a cancellation. Such a caller handles its own
signals (its event loop), so `ci.api` never installs signal handlers.

Command-line front ends (tasks.py, the VM teardown in ci.openstack.vm) use `signals_cancel(token)` or
`on_signals(handler)`: SIGINT and SIGTERM, the signals GitHub Actions sends to a cancelled step,
set the token (or call the handler); a second signal while a run is winding down raises
KeyboardInterrupt so that a person can still force their way out. Handlers are only installed in
the main thread (Python allows nothing else) and are restored on the way out.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from ci.errors import CIError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, FrameType | None], None]


class Cancelled(CIError):
    """A step stopped because its run was cancelled (not a failure of the image)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception, so `finally` blocks (teardown, lock release) run; a
    KeyboardInterrupt so that code handling Ctrl-C handles it the same way."""


class CancelToken:
    """A thread-safe flag with a reason; every wait of a run checks it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout` seconds; True as soon as the token is cancelled."""
        return self._event.wait(timeout)

    def check(self) -> None:
        """Raise `Cancelled` if the run was cancelled (call it between two pieces of work)."""
        if self._event.is_set():
            raise Cancelled(f"cancelled: {self.reason}" if self.reason else "cancelled")


@contextmanager
def on_signals(handler: Handler) -> Iterator[None]:
    """Install `handler` for SIGINT and SIGTERM while inside; a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in SIGNALS}
    try:
        for number in SIGNALS:
            signal.signal(number, handler)
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def set_handlers(handlers: dict[int, Handler]) -> None:
    """Install handlers for the rest of the process (a worker process that is its own front end)."""
    for number, handler in handlers.items():
        signal.signal(number, handler)


def raise_on_signal(number: int, frame: FrameType | None) -> None:
    """The handler for code that must unwind at once (SIGTERM -> Terminated, SIGINT -> KeyboardInterrupt)."""
    if number == signal.SIGTERM:
        raise Terminated("terminated (SIGTERM)")
    raise KeyboardInterrupt


@contextmanager
def signals_cancel(token: CancelToken, say: Callable[[str], None] | None = None) -> Iterator[CancelToken]:
    """SIGINT/SIGTERM cancel `token` (the run winds down: jobs cancelled, lock released); a second
    signal raises at once (`raise_on_signal`)."""

    def handler(number: int, frame: FrameType | None) -> None:
        if token.is_set():
            raise_on_signal(number, frame)
        name = signal.Signals(number).name
        token.cancel(f"{name} received")
        if say is not None:
            say(f"{name} received: cancelling the run (its jobs are cancelled, the site lock released); "
                "send it again to stop at once")

    with on_signals(handler):
        yield token


def wait_until(probe: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Poll `probe` until it is true or `timeout` passes; True if it became true (waits that give up)."""
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
