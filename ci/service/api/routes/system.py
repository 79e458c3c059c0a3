"""Health (the one endpoint without a token), Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ci.service import crud
from ci.service.api.deps import CallerDep, ServiceDep
from ci.service.api.errors import problem
from ci.service.models import Health, ProblemResponse, Status

router = APIRouter(tags=["system"])
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"model": ProblemResponse, "description": "no valid token"}}


@router.get("/healthz", response_model=Health, responses={503: {"model": ProblemResponse}})
async def healthz(service: ServiceDep) -> Health:
    """Liveness and database reachability, for load balancers (no token needed, nothing revealed)."""
    try:
        await run_in_threadpool(crud.ping, service.db)
    except Exception:
        raise problem(503, "the database does not answer", "check ci.service.database") from None
    return Health(status="ok", database="ok")


@router.get("/metrics", response_class=PlainTextResponse, responses={
    **UNAUTHORIZED, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "metrics"}})
async def metrics(request: Request, caller: CallerDep, service: ServiceDep) -> PlainTextResponse:
    """Prometheus text format: builds by status, requests, pool slots, HTTP requests by method and code."""
    counts = await run_in_threadpool(crud.counts, service.db)
    lines = ["# HELP cic_builds Builds by status.", "# TYPE cic_builds gauge"]
    lines += [f'cic_builds{{status="{status.value}"}} {counts.by_status.get(status.value, 0)}' for status in Status]
    lines += ["# HELP cic_requests Requests recorded (several may share a build).", "# TYPE cic_requests gauge",
              f"cic_requests {counts.requests}",
              "# HELP cic_pool_slots Builds that may run at once, across all replicas.", "# TYPE cic_pool_slots gauge",
              f"cic_pool_slots {counts.slots}",
              "# HELP cic_pool_busy Slots holding a build.", "# TYPE cic_pool_busy gauge",
              f"cic_pool_busy {counts.busy_slots}"]
    lines += request.app.state.http_metrics.lines()
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/openapi.json", responses={**UNAUTHORIZED, 200: {"content": {"application/json": {
    "schema": {"type": "object"}}}, "description": "the OpenAPI document"}})
async def openapi(request: Request, caller: CallerDep) -> JSONResponse:
    """This API's OpenAPI document."""
    return JSONResponse(request.app.openapi())
