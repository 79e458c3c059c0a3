"""Builds the FastAPI app: routers (also under /image_creation, as eFlows4HPC serves them), the
error shape, security headers, request metrics, and the worker pool in the app's lifespan."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ci.service.api.errors import ProblemError, items
from ci.service.api.routes import builds, images, system, web
from ci.service.eflows import login as eflows_login
from ci.service.models import DefinitionRequest, WorkflowRequest
from ci.service.service import Service
from ci.service.worker import Pool

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
}
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class HttpMetrics:
    """Requests by method and status code, with their total duration (Prometheus counters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count: dict[tuple[str, int], int] = {}
        self.seconds: dict[tuple[str, int], float] = {}

    def add(self, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, status)
            self.count[key] = self.count.get(key, 0) + 1
            self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def lines(self) -> list[str]:
        with self._lock:
            out = ["# HELP cic_http_requests_total HTTP requests answered.", "# TYPE cic_http_requests_total counter"]
            out += [f'cic_http_requests_total{{method="{m}",code="{c}"}} {n}'
                    for (m, c), n in sorted(self.count.items())]
            out += ["# HELP cic_http_request_seconds_total Time spent answering HTTP requests.",
                    "# TYPE cic_http_request_seconds_total counter"]
            out += [f'cic_http_request_seconds_total{{method="{m}",code="{c}"}} {s:.6f}'
                    for (m, c), s in sorted(self.seconds.items())]
            return out


def _problem_json(status: int, detail: str, problems: list[dict[str, str]],
                  headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "problems": problems}, status_code=status, headers=headers)


def create_app(service: Service, *, workers: bool = True) -> FastAPI:
    """The app for one replica; `workers=False` serves the API without running builds (API tests, benchmarks)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.db.migrate()
        pool = Pool(service, threads=None if workers else 0)
        pool.start()
        app.state.pool = pool
        try:
            yield
        finally:
            pool.stop()

    app = FastAPI(title="containers-ci image creation", version="1.0",
                  description="HPC container images on request (a superset of eFlows4HPC's image creation API).",
                  openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service = service
    app.state.http_metrics = HttpMetrics()
    app.include_router(system.router)
    app.include_router(builds.router)
    app.include_router(images.router)
    app.include_router(builds.router, prefix="/image_creation")
    app.include_router(images.router, prefix="/image_creation")
    app.include_router(web.router)
    app.include_router(eflows_login.router)  # eFlows4HPC's GET /login, as its client.py calls it
    app.include_router(eflows_login.router, prefix="/image_creation")

    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError) -> JSONResponse:
        return _problem_json(exc.status_code, str(exc.detail), items(exc.problems),
                             dict(exc.headers) if exc.headers else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return _problem_json(exc.status_code, str(exc.detail), [], dict(headers) if headers else None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, _exc: RequestValidationError) -> JSONResponse:
        # Handlers take their parameters as text and check them with our models (ci.validation's wording);
        # this only answers a request FastAPI could not even hand over.
        return _problem_json(422, "the request is not valid; see /openapi.json for what each operation takes", [])

    app.add_middleware(Guard, metrics=app.state.http_metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            bodies = TypeAdapter(WorkflowRequest | DefinitionRequest).json_schema(
                ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(bodies.get("$defs", {}))
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"},
                                                       "basic": {"type": "http", "scheme": "basic"}}
            schema["security"] = [{"bearer": []}, {"basic": []}]
            schema["paths"]["/healthz"]["get"]["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class Guard:
    """Plain ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on every poll): refuses changes from
    other web sites, adds the security headers, counts requests for /metrics."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        refusal = _refuse_cross_site(scope)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        try:
            if refusal is not None:
                await refusal(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            self.metrics.add(scope["method"], status[0], time.perf_counter() - started)


def _refuse_cross_site(scope: Scope) -> Response | None:
    """A browser holding HTTP basic credentials sends them to cross-site requests too: changes need same origin."""
    if scope["method"] not in UNSAFE:
        return None
    headers = Headers(scope=scope)
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    host = headers.get("host", "")
    if site in ("cross-site", "same-site") or (origin and origin != "null" and urlsplit(origin).netloc != host):
        return _problem_json(403, "a change from another web site is refused; use the page of this service", [])
    return None


def serve(service: Service, *, host: str, port: int, workers: bool = True) -> None:
    """Run one replica with uvicorn (behind a reverse proxy in production; see docs/deploying.md)."""
    import uvicorn

    uvicorn.run(create_app(service, workers=workers), host=host, port=port, proxy_headers=True,
                forwarded_allow_ips="127.0.0.1", server_header=False, log_level="info", timeout_graceful_shutdown=30)
