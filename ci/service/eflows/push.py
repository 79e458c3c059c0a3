"""`push`: a finished eFlows4HPC build's image, tagged `<images_prefix><name>:<version>` and pushed.

eFlows4HPC's builder logs in with `echo $TOKEN | docker login` inside a shell line that also holds
the token as an argument of its script. Here the credentials come from the server's environment
($CI_IMAGES_REGISTRY_USER and $CI_IMAGES_REGISTRY_TOKEN), go to `docker login --password-stdin`
through the engine's private config folder, and appear on no command line and in no log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from ci.docker import whales
from ci.docker.engine import DockerEngine
from ci.service.core.security import Redactor
from ci.service.db import Database
from ci.service.models import Build

USER_VARIABLE = "CI_IMAGES_REGISTRY_USER"
TOKEN_VARIABLE = "CI_IMAGES_REGISTRY_TOKEN"


def push_finished(db: Database, build_id: str, log: Callable[[str], None]) -> str | None:
    """Push a finished build whose source asks for it; None when done or not asked, else why it failed."""
    with db.reading() as session:
        build = session.get(Build, build_id)
        source = json.loads(build.source) if build is not None and build.source else {}
    target, local = source.get("push"), source.get("local_tag")
    if not target or not local:
        return None
    engine = DockerEngine()
    user, token = os.environ.get(USER_VARIABLE), os.environ.get(TOKEN_VARIABLE)
    redact = Redactor.from_environment()
    try:
        if user and token:
            engine.login(target.split("/", 1)[0], user, token)
        engine.tag(local, target)
        engine.client.image.push(target, quiet=True)
        log(f"pushed {target}\n")
        return None
    except whales.DockerException as exc:
        detail = redact((exc.stderr or exc.stdout or "").strip().splitlines()[-1:][0] if (exc.stderr or exc.stdout)
                        else f"exit {exc.return_code}")
        log(f"push of {target} failed: {detail}\n")
        return f"the image was built but the push to {target} failed: {detail}"
    finally:
        engine.forget_logins()
