"""Builds: request (eFlows4HPC's body or a definition), status, logs, cancel, list."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ci.documents import DocumentRefused, load_json
from ci.errors import CIError, DefinitionError
from ci.service import crud
from ci.service.api.deps import CallerDep, ServiceDep
from ci.service.api.errors import problem, problems_response, validation_response
from ci.service.eflows import requests as eflows_requests
from ci.service.eflows.git import SourceError
from ci.service.eflows.resolve import dry_run as eflows_dry_run
from ci.service.models import (
    TERMINAL,
    BuildList,
    BuildView,
    Created,
    DefinitionRequest,
    ProblemResponse,
    Status,
    WorkflowRequest,
)
from ci.service.views import view

router = APIRouter(tags=["builds"])
ID = re.compile(r"^[0-9a-f]{32}\Z")
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemResponse, "description": "no token, or not a valid one"},
    403: {"model": ProblemResponse, "description": "somebody else's build"},
    404: {"model": ProblemResponse, "description": "no such build"},
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    401: ERRORS[401],
    403: {"model": ProblemResponse, "description": "`path` (a step folder on the server) without an admin token, or "
                                                   "outside ci.service.eflows_allowed_paths"},
    413: {"model": ProblemResponse, "description": "the body is larger than ci.service.max_body_bytes"},
    415: {"model": ProblemResponse, "description": "the body is not JSON"},
    422: {"model": ProblemResponse, "description": "the body does not follow the grammar, or names nothing buildable"},
    503: {"model": ProblemResponse, "description": "the site could not be asked (e.g. for its engine)"},
}
BODY_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
    {"$ref": "#/components/schemas/WorkflowRequest"}, {"$ref": "#/components/schemas/DefinitionRequest"}]}}}}}


class LogQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")

    offset: int = Field(0, ge=0, le=2**53)
    follow: bool = False


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it grows past `limit` (a declared length is checked first)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise problem(413, f"the body is larger than {limit} bytes", "send a smaller request")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise problem(413, f"the body is larger than {limit} bytes", "send a smaller request")
    return bytes(data)


def parse_body(raw: bytes) -> WorkflowRequest | DefinitionRequest:
    try:
        data = load_json(raw)
    except DocumentRefused as exc:
        raise problem(422, f"the body is not usable JSON ({exc.message})", exc.fix, field="body") from None
    except json.JSONDecodeError as exc:
        raise problem(422, f"the body is not valid JSON ({exc})", "send a JSON object",
                      field=f"line {exc.lineno} column {exc.colno}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise problem(422, f"the body is not valid JSON ({exc})", "send a JSON object") from None
    if not isinstance(data, dict):
        raise problem(422, "the body is not a JSON object", 'send {"definition": NAME} or an eFlows4HPC request')
    model: type[WorkflowRequest] | type[DefinitionRequest] = WorkflowRequest if eflows_requests.is_workflow(data) \
        else DefinitionRequest
    try:
        if model is WorkflowRequest:
            data = eflows_requests.coerce(data)  # eFlows4HPC's string booleans; platforms not built here
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_response(exc) from None
    except DefinitionError as exc:
        raise problems_response(422, "the request cannot be built here", exc.problems) from None


async def create(request: Request, caller: CallerDep, service: ServiceDep) -> Created:
    """Request an image: eFlows4HPC's body (`machine`, `workflow`, `step_id`, `version`, `force`) or
    `{"definition": NAME, "arch", "force"}`. An identical request in flight or finished is joined."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise problem(415, f"the body must be application/json, not {content_type}", "send JSON")
    body = parse_body(await read_body(request, service.settings.max_body_bytes))
    dry_run = request.query_params.get("dry_run", "false")
    if dry_run not in ("true", "false", "True", "False"):
        raise problem(422, f"dry_run={dry_run[:40]!r} is not true or false", "send ?dry_run=true or leave it out",
                      field="dry_run")
    try:
        if dry_run in ("true", "True"):
            return JSONResponse(await run_in_threadpool(eflows_dry_run, service, body, caller.admin))  # type: ignore[return-value]
        resolved = await run_in_threadpool(service.resolve, body, admin=caller.admin)
    except PermissionError as exc:
        raise problem(403, str(exc), "leave `path` out, or use an admin token", field="path") from None
    except DefinitionError as exc:
        raise problems_response(422, "the request names nothing this service can build", exc.problems) from None
    except SourceError as exc:
        raise problem(503, f"the workflow registry or software catalog could not be read: {exc}",
                      "try again later, or ask the operator") from None
    except CIError as exc:
        raise problem(503, f"the site could not be asked: {exc}", "try again later, or ask the operator") from None
    record, build = await run_in_threadpool(crud.submit, service.db, caller, resolved)
    pool = getattr(request.app.state, "pool", None)
    if pool is not None:
        pool.wake.set()
    return Created(id=record.id, status=Status(build.status), attached=record.attached,
                   url=str(request.url_for("build_status", build_id=record.id)))


for path in ("/build", "/build/"):
    router.add_api_route(path, create, methods=["POST"], response_model=Created, responses=BODY_ERRORS,
                         openapi_extra=BODY_SCHEMA, name="create_build" if path == "/build" else "create_build_slash",
                         summary="Request an image")


def _lookup(service: Any, caller: crud.Caller, build_id: str) -> tuple[Any, Any, int]:
    if not ID.match(build_id):
        raise problem(404, "no such build", "use the id that POST /build returned")
    try:
        return crud.get(service.db, caller, build_id)
    except crud.NotFound:
        raise problem(404, "no such build", "use the id that POST /build returned") from None
    except crud.Forbidden:
        raise problem(403, "this build belongs to another user", "ask for your own builds (GET /builds)") from None


@router.get("/build/{build_id}", response_model=BuildView, responses=ERRORS, name="build_status")
async def status(build_id: str, request: Request, caller: CallerDep, service: ServiceDep) -> BuildView:
    """The build's status: eFlows4HPC's fields (status, message, image_id, filename) and timestamps,
    digest, sha256, and the log and download URLs."""
    record, build, shared = await run_in_threadpool(_lookup, service, caller, build_id)
    return view(request, record, build, shared)


@router.get("/builds", response_model=BuildList, responses={401: ERRORS[401]})
async def builds(request: Request, caller: CallerDep, service: ServiceDep) -> BuildList:
    """Your builds, newest first (an admin sees everybody's)."""
    rows = await run_in_threadpool(crud.listing, service.db, caller)
    return BuildList(builds=[view(request, record, build, shared) for record, build, shared in rows])


@router.post("/build/{build_id}/cancel", response_model=BuildView, responses=ERRORS)
async def cancel(build_id: str, request: Request, caller: CallerDep, service: ServiceDep) -> BuildView:
    """Cancel: a queued build at once, a running one is stopped (its batch jobs too). If others share
    the build, only your request is cancelled."""
    await run_in_threadpool(_lookup, service, caller, build_id)
    await run_in_threadpool(crud.cancel, service.db, caller, build_id)
    record, build, shared = await run_in_threadpool(_lookup, service, caller, build_id)
    return view(request, record, build, shared)


LOG_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS, 422: {"model": ProblemResponse, "description": "offset or follow not valid"},
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "the log from `offset` (header X-Log-Offset: where to continue)"}}


@router.get("/build/{build_id}/logs", response_class=Response, responses=LOG_RESPONSES)
async def logs(build_id: str, request: Request, caller: CallerDep, service: ServiceDep,
               offset: str = Query("0", description="byte offset to start from (a whole number)"),
               follow: str = Query("false", description="true: stream until the build ends")
               ) -> Response:
    """The build's log (secrets redacted), from a byte offset; with follow=true streamed until the build ends."""
    try:
        query = LogQuery.model_validate({"offset": int(offset) if offset.isdigit() else offset,
                                         "follow": follow == "true" if follow in ("true", "false") else follow})
    except ValidationError as exc:
        raise validation_response(exc, file="query") from None
    _, build, _ = await run_in_threadpool(_lookup, service, caller, build_id)
    path = service.log_path(build.id)
    limit = service.settings.log_tail_bytes

    def chunk(start: int) -> bytes:
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                return handle.read(limit)
        except OSError:
            return b""

    if not query.follow:
        data = await run_in_threadpool(chunk, query.offset)
        return Response(data, media_type="text/plain; charset=utf-8",
                        headers={"X-Log-Offset": str(query.offset + len(data)), "X-Build-Status": build.status})

    async def stream() -> AsyncIterator[bytes]:
        position = query.offset
        deadline = time.monotonic() + 24 * 3600
        while time.monotonic() < deadline:
            data = await run_in_threadpool(chunk, position)
            if data:
                position += len(data)
                yield data
                continue
            _, current, _ = await run_in_threadpool(crud.get, service.db, caller, build_id)
            if current.status in TERMINAL:
                final = await run_in_threadpool(chunk, position)
                if final:
                    yield final
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8",
                             headers={"X-Build-Status": build.status})
