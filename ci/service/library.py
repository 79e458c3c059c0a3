"""Library mode: one request (eFlows4HPC's JSON, or ours) built without a server.

It uses the service's database, store and pool slots like a replica would, so it shares
finished builds with a running server and never exceeds the pool; it runs only its own build.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ci.documents import DocumentRefused, load_json
from ci.errors import CIError, DefinitionError, Problem
from ci.service import crud
from ci.service.eflows import requests as eflows_requests
from ci.service.models import TERMINAL, DefinitionRequest, Status, WorkflowRequest
from ci.service.service import Service
from ci.service.settings import ServiceSettings
from ci.service.worker import Pool
from ci.validation import problems_from

LIBRARY_USER = "library"


def read_request(path: Path) -> WorkflowRequest | DefinitionRequest:
    """The request file, checked by the same models as the API's bodies (DefinitionError lists every problem)."""
    try:
        data = load_json(path.read_text(encoding="utf-8"))
    except DocumentRefused as exc:
        raise DefinitionError([Problem(path, "", exc.message, exc.fix)]) from None
    except OSError as exc:
        raise CIError(f"cannot read the request file {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CIError(f"{path} is not JSON ({exc}); write the request as a JSON object") from None
    if not isinstance(data, dict):
        raise CIError(f"{path} holds no JSON object; write {{\"machine\": ..., \"workflow\": ..., \"step_id\": ...}}")
    model: type[WorkflowRequest] | type[DefinitionRequest] = WorkflowRequest if eflows_requests.is_workflow(data) \
        else DefinitionRequest
    try:
        if model is WorkflowRequest:
            data = eflows_requests.coerce(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(problems_from(exc, file=path, model=model)) from None


def run_request(settings: ServiceSettings, path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Build the request in the foreground (or join the build that has its content); its final status."""
    body = read_request(path)
    service = Service(settings)
    try:
        service.db.migrate()
        caller = crud.ensure_user(service.db, LIBRARY_USER)
        record, build = crud.submit(service.db, caller, service.resolve(body, admin=True))  # the operator's own run
        say(f"request {record.id}: build {build.id[:12]} {build.status}" + (" (joined)" if record.attached else ""))
        pool = Pool(service, threads=0, say=say)
        pool.start()
        last = ""
        while True:
            _, current, _ = crud.get(service.db, caller, record.id)
            if current.status in TERMINAL:
                break
            if current.message != last:
                say(f"{current.status}: {current.message}")
                last = current.message
            claimed = crud.claim(service.db, pool.owner, settings.lease_seconds, settings.pool, build_id=build.id)
            if claimed is not None:
                pool.run(claimed)
            else:
                time.sleep(settings.poll_interval)  # a server holds it, or the pool is full
                pool.reap()
        _, current, _ = crud.get(service.db, caller, record.id)
        return {"id": record.id, "status": current.status, "message": current.message, "image_id": current.image_id,
                "filename": current.filename, "sha256": current.sha256,
                "path": str(settings.store / current.filename) if current.filename else None,
                "ok": current.status == Status.FINISHED.value}
    finally:
        service.db.close()


def render_request(settings: ServiceSettings, path: Path, output: Path) -> dict[str, Any]:
    """`--render DIR`: stage the workflow request into DIR (what would be built); nothing is built or recorded."""
    from ci.service.eflows.resolve import render, rendered_files

    body = read_request(path)
    if not isinstance(body, WorkflowRequest) or settings.eflows is None:
        raise CIError(f"{path}: --render renders eFlows4HPC workflow requests (machine, workflow, step_id) only")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise CIError(f"--render {output}: the folder exists and is not empty; name a new or empty folder")
    result = rendered_files(render(settings.eflows, body, output, admin=True))
    result["folder"] = str(output)
    return result
