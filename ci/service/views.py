"""A request and its build as the API shows them (BuildView)."""

from __future__ import annotations

import datetime
import json

from starlette.requests import Request as HTTPRequest

from ci.service.models import Build, BuildView, Request, Status


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def view(http: HTTPRequest, record: Request, build: Build, shared: int) -> BuildView:
    cancelled_alone = record.cancelled and build.status not in (Status.CANCELLED.value,)
    status = Status.CANCELLED if cancelled_alone else Status(build.status)
    message = "cancelled (the build goes on for the other requests that share it)" if cancelled_alone \
        else build.message
    finished = status is Status.FINISHED and build.filename is not None
    return BuildView(
        id=record.id, status=status, message=message, image_id=build.image_id,
        filename=build.filename if finished else None, kind=build.kind,  # type: ignore[arg-type]
        definition=build.image, arch=build.arch, machine=json.loads(build.machine), workflow=build.workflow,
        step_id=build.step_id, version=build.version, digest=build.digest, key=build.key,
        sha256=build.sha256 if finished else None, size=build.size if finished else None, attempts=build.attempts,
        shared=shared > 1, created=iso(record.created) or "", started=iso(build.started),
        finished=iso(build.finished), updated=iso(build.updated) or "",
        log_url=str(http.url_for("logs", build_id=record.id)),
        download_url=str(http.url_for("download", filename=build.filename)) if finished and build.filename else None,
        source=json.loads(build.source) if build.source else None)
