"""What the `service.*` tasks do, so that tasks.py stays a list of entry points.

The heavy imports (FastAPI, SQLAlchemy, uvicorn) happen inside the functions: `inv --list`
and the pipeline's own tasks never pay for them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ci.config.settings import Settings
from ci.documents import DocumentRefused, load_json
from ci.errors import CIError

USER_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")


def serve(settings: Settings, *, host: str | None, port: int | None, workers: bool) -> None:
    from ci.service.main import serve as run
    from ci.service.service import Service
    from ci.service.settings import service_settings

    resolved = service_settings(settings, {"host": host, "port": port})
    run(Service(resolved), host=resolved.host, port=resolved.port, workers=workers)


def token(settings: Settings, user: str, *, admin: bool) -> str:
    from ci.service import crud
    from ci.service.db import Database
    from ci.service.settings import service_settings

    if not USER_NAME.match(user):
        raise CIError(f"--user {user!r} is not a user name; use [a-z][a-z0-9_.-]* (at most 64 characters)")
    db = Database.open(service_settings(settings).database_url)
    try:
        db.migrate()
        return crud.issue_token(db, user, admin=admin)
    finally:
        db.close()


def request(settings: Settings, path: str, say: Callable[[str], None], render: str | None = None) -> dict[str, Any]:
    from ci.service.library import render_request, run_request
    from ci.service.settings import service_settings

    if render:
        return render_request(service_settings(settings), Path(path), Path(render))
    return run_request(service_settings(settings), Path(path), say)


def client(settings: Settings, action: str, *, build_id: str | None, request: str | None, definition: str | None,
           arch: str | None, force: bool, follow: bool, out: str, url: str | None) -> None:
    from ci.service.client import Client
    from ci.service.settings import service_settings

    if action not in ("build", "status", "logs", "cancel", "download"):
        raise CIError(f"unknown action {action!r}; use build, status, logs, cancel or download "
                      "(every flag: `inv --help service.client`)")
    if action != "build" and not build_id:
        raise CIError(f"{action} needs --id ID (the id that `build` printed)")
    connection = Client(url or service_settings(settings).url)
    try:
        if action == "build":
            body = _body(request, definition, arch, force)
            _print(connection.build(body))
        elif action == "status":
            _print(connection.status(str(build_id)))
        elif action == "cancel":
            _print(connection.cancel(str(build_id)))
        elif action == "logs":
            for text in connection.logs(str(build_id), follow=follow):
                sys.stdout.write(text)
                sys.stdout.flush()
        else:
            print(connection.download(str(build_id), Path(out)))
    finally:
        connection.close()


def _body(request: str | None, definition: str | None, arch: str | None, force: bool) -> dict[str, Any]:
    if request:
        try:
            data = load_json(Path(request).read_text(encoding="utf-8"))
        except DocumentRefused as exc:
            raise CIError(f"{request}: {exc.message}; {exc.fix}") from None
        except OSError as exc:
            raise CIError(f"cannot read {request}: {exc.strerror}") from None
        except ValueError as exc:
            raise CIError(f"{request} is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise CIError(f"{request} holds no JSON object")
        return data
    if definition:
        return {"definition": definition, "arch": arch or "amd64", "force": bool(force)}
    raise CIError("build needs --request FILE or --definition NAME")


def _print(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
