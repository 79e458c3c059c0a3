"""The allocator's two HTTP endpoints: Prometheus metrics (loopback) and GitHub's webhooks.

A `workflow_job` webhook only wakes the poll loop: the poll that follows reads the truth from
the API (conditionally, so it is cheap) and polling keeps reconciling if a delivery is lost.
Deliveries are verified with HMAC-SHA256 over the raw body (`X-Hub-Signature-256`), compared in
constant time; an unsigned or wrongly signed request is refused with 401 and does nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20  # GitHub caps webhook payloads at 25 MB; a workflow_job is a few kB

log = logging.getLogger("ci.runners")


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(signature(secret, body), str(header))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[tuple[str, str], Callable[[BaseHTTPRequestHandler, bytes], tuple[int, str, bytes]]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # no access log: request lines are not interesting and headers may carry signatures

    def _serve(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        route = self.server.routes.get((method, path))
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413, "text/plain", b"payload too large\n")
            return
        body = self.rfile.read(length) if length else b""
        if route is None:
            self._answer(404, "text/plain", b"not found\n")
            return
        try:
            status, content_type, payload = route(self, body)
        except Exception:  # a handler bug must not kill the endpoint; the message goes to our log
            log.exception("endpoint %s %s failed", method, path)
            status, content_type, payload = 500, "text/plain", b"internal error\n"
        self._answer(status, content_type, payload)

    def _answer(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


class Endpoints:
    """One HTTP server per (host, port); started in daemon threads, stopped by `close()`."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, int], _Server] = {}
        self._threads: list[threading.Thread] = []

    def add(self, host: str, port: int, method: str, path: str,
            route: Callable[[BaseHTTPRequestHandler, bytes], tuple[int, str, bytes]]) -> tuple[str, int]:
        key = (host, port)
        server = self._servers.get(key) if port else None
        if server is None:
            server = _Server((host, port), _Handler)
            server.routes = {}
            self._servers[(host, server.server_address[1])] = server
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                      name=f"runners-http-{server.server_address[1]}", daemon=True)
            thread.start()
            self._threads.append(thread)
        server.routes[(method, path)] = route
        return host, int(server.server_address[1])

    def close(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()


def metrics_route(render: Callable[[], str]) -> Callable[[BaseHTTPRequestHandler, bytes], tuple[int, str, bytes]]:
    def route(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", render().encode()
    return route


def webhook_route(secret: bytes, repository: str,
                  wake: Callable[[dict[str, Any]], None]) -> Callable[[BaseHTTPRequestHandler, bytes],
                                                                      tuple[int, str, bytes]]:
    def route(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes]:
        if not verify(secret, body, handler.headers.get("X-Hub-Signature-256")):
            log.warning("webhook delivery %s refused: bad or missing X-Hub-Signature-256",
                        handler.headers.get("X-GitHub-Delivery", "?"))
            return 401, "text/plain", b"bad signature\n"
        event = handler.headers.get("X-GitHub-Event", "")
        if event == "ping":
            return 200, "text/plain", b"pong\n"
        if event != "workflow_job":
            return 202, "text/plain", b"ignored\n"
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "text/plain", b"not JSON\n"
        full_name = str((payload.get("repository") or {}).get("full_name", ""))
        if full_name.lower() != repository.lower():
            return 202, "text/plain", b"other repository\n"
        wake(payload)
        return 202, "text/plain", b"accepted\n"
    return route
