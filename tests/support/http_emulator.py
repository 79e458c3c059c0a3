"""The lifecycle every HTTP emulator of the tests shares: a loopback server, its thread, its request log.

The emulated cloud (tests/cloud_emulator) and the emulated GitHub API (tests/github_emulator)
stand in for services that cannot run here, at the HTTP boundary, so our real clients talk to
them. What differs is only how a request is answered (`HTTPEmulator.answer`); how the server
starts on a free port of 127.0.0.1, is known to be ready, logs what it was asked, and stops (in
a test, or under Ctrl-C / SIGTERM when run by hand with `python -m tests.<emulator>`) is here,
once.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Generic, Self, TypeVar

Entry = TypeVar("Entry")


@dataclass
class Answer:
    """What the emulator sends back: the status, the body's bytes and the headers besides Content-Length."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class RequestLog(list[Entry]):
    """The requests an emulator answered, oldest first; with `limit`, only the newest `limit` are kept.

    A list (tests compare it, slice it and search it); the bound keeps a long-running emulator (a
    benchmark, a session by hand) from growing without end.
    """

    def __init__(self, limit: int | None = None, entries: Iterable[Entry] = ()):
        super().__init__(entries)
        self.limit = limit

    def append(self, entry: Entry) -> None:
        super().append(entry)
        if self.limit is not None and len(self) > self.limit:
            del self[: len(self) - self.limit]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client that keeps its connection open never holds up stop()
    emulator: HTTPEmulator[Any]


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, asks the emulator for its answer, writes it (keep-alive, one segment)."""

    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in one segment: no 40 ms delayed-ACK stalls
    wbufsize = 1 << 16

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.emulator.answer(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if answer.body:
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch


class HTTPEmulator(Generic[Entry]):
    """An HTTP service on 127.0.0.1 (a free port unless `port` is given), served from a thread.

    Subclasses implement `answer`; `requests` logs what they choose to record (its entries are the
    subclass's own type), under `lock`, which the subclass also holds while it changes its state.
    Use as a context manager in tests (`with Cloud...Emulator() as emulator:`), or `serve_until_signalled`
    by hand. The socket listens from construction on, so `url` can be handed out before `start`.
    """

    thread_name = "http-emulator"

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", verbose: bool = False,
                 keep_requests: int | None = None):
        self.lock = threading.RLock()
        self.requests: RequestLog[Entry] = RequestLog(keep_requests)
        self.verbose = verbose
        self._httpd = _Server((host, port), _Handler)
        self._httpd.emulator = self
        self._thread: threading.Thread | None = None

    # ---- what a subclass provides ---------------------------------------------------------------
    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        """The answer to one request (`target` is the path with its query string)."""
        raise NotImplementedError

    # ---- where it is -----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Self:
        """Serve from a daemon thread; returns when a connection to the port is accepted."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        wait_until_listening(self.host, self.port, timeout=10)
        return self

    def stop(self) -> None:
        """Stop serving (when started) and close the socket; the request log stays readable."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in this thread until the server is shut down (or Ctrl-C)."""
        self._httpd.serve_forever()

    def serve_until_signalled(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop: `python -m tests.<emulator>` run by hand or by a script."""
        stop = threading.Event()

        def handler(number: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()
            for number, old in previous.items():
                signal.signal(number, old)


def wait_until_listening(host: str, port: int, timeout: float) -> None:
    """Readiness of a server (a thread here or another process): a TCP connection to it is accepted."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout:g}s "
                                   f"({exc})") from None
            time.sleep(0.05)
