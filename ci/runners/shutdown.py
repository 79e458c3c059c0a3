"""SIGINT and SIGTERM as a request to stop: the loop finishes its step and exits cleanly.

(Kept here until a shared shutdown helper exists in the package; it has no allocator logic.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(on_stop: Callable[[int], None], signals: tuple[signal.Signals, ...] = STOP_SIGNALS
                    ) -> Iterator[None]:
    """Call `on_stop(signum)` on each of `signals` during the block; the old handlers come back after.

    Only the main thread may install handlers; elsewhere (a test's thread) the block runs without.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        on_stop(signum)

    previous = {number: signal.getsignal(number) for number in signals}
    for number in signals:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
