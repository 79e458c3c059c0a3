"""The service as one object: settings, database, image store, and the pool; shared by the app,
the library mode (`inv service.request`) and the tasks.

`resolve()` turns a request body into pipeline terms and its content key: the definition's digest
(read from the tree, nothing run) plus the machine (architecture, requested engine, the site's
engine; for workflow steps the whole machine, whose constraints are part of the environment).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ci.errors import DefinitionError, Problem
from ci.service import builder, crud, workflows
from ci.service.core import security
from ci.service.crud import Resolved
from ci.service.db import Database
from ci.service.models import ARCH_OF_PLATFORM, BuildBody, DefinitionRequest, WorkflowRequest
from ci.service.settings import ServiceSettings
from ci.service.store import ImageStore

BODY = Path("request body")
AUTH_CACHE_SECONDS = 30.0


class Service:
    def __init__(self, settings: ServiceSettings, db: Database | None = None):
        self.settings = settings
        self.db = db or Database.open(settings.database_url)
        self.store = ImageStore(settings.store)
        self._engine: str | None = None
        self._engine_lock = threading.Lock()
        self._callers: dict[tuple[str | None, str], tuple[float, crud.Caller]] = {}

    def cached_caller(self, user: str | None, token: str) -> crud.Caller | None:
        """The caller of a token seen in the last AUTH_CACHE_SECONDS (no database: clients poll every second)."""
        cached = self._callers.get((user, security.token_hash(token)))
        return cached[1] if cached is not None and cached[0] > time.monotonic() else None

    def authenticate(self, user: str | None, token: str) -> crud.Caller | None:
        """The caller of a token (from the database, then remembered for AUTH_CACHE_SECONDS)."""
        key = (user, security.token_hash(token))
        now = time.monotonic()
        caller = crud.authenticate(self.db, user, token)
        if caller is not None:
            if len(self._callers) > 10_000:
                self._callers.clear()
            self._callers[key] = (now + AUTH_CACHE_SECONDS, caller)
        return caller

    def site_engine(self) -> str:
        """The site's engine, asked once (for `auto`, the site host is probed the first time)."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = builder.site_engine(self.settings.pipeline)
            return self._engine

    def log_path(self, build_id: str) -> Path:
        return self.settings.builds_dir / build_id / "build.log"

    def resolve(self, body: BuildBody, *, admin: bool = False) -> Resolved:
        if isinstance(body, DefinitionRequest):
            return self._definition(body)
        if self.settings.eflows is not None:  # eFlows4HPC's step format and git registry (ci/service/eflows)
            from ci.service.eflows.resolve import resolve_workflow

            return resolve_workflow(self, body, admin=admin)
        return self._workflow(body)

    def _engine_for(self, requested: str | None, field: str) -> tuple[str, str]:
        site = self.site_engine()
        engine = requested or site
        if site not in builder.COMPATIBLE.get(engine, ()):
            usable = sorted(name for name, sites in builder.COMPATIBLE.items() if site in sites)
            raise DefinitionError([Problem(BODY, field, f"this service's site converts with {site} "
                                           f"(.{builder.SUFFIX.get(site, '?')} files), which {engine} cannot run",
                                           f"ask for one of: {', '.join(usable)}")])
        return engine, site

    def _definition(self, body: DefinitionRequest) -> Resolved:
        pipeline = self.settings.pipeline
        tree = pipeline.definitions
        if not (tree / body.arch).is_dir():
            raise DefinitionError([Problem(BODY, "arch", f"the definitions tree has no architecture '{body.arch}'",
                                           "use one of: " + ", ".join(sorted(p.name for p in tree.iterdir()
                                                                             if p.is_dir() and p.name != "common")))])
        engine, site = self._engine_for(body.container_engine, "container_engine")
        image = builder.planned_image(builder.with_tree(pipeline, tree, body.arch), body.definition)
        machine = {"platform": f"linux/{body.arch}", "container_engine": engine}
        key = builder.build_key("definition", image.digest, {**machine, "site_engine": site})
        return Resolved(kind="definition", image=image.name, arch=body.arch, engine=engine, machine=machine,
                        definitions=str(tree), digest=image.digest, image_id=image.tag, key=key, force=body.force)

    def _workflow(self, body: WorkflowRequest) -> Resolved:
        step = workflows.resolve(self.settings.workflow_registry, body)
        engine, site = self._engine_for(body.machine.container_engine, "machine.container_engine")
        machine = workflows.machine_key(body.machine)
        tree = self.settings.state_dir / "workflows" / step.digest()[:24]
        common = dict(kind="workflow", image=step.image, arch=ARCH_OF_PLATFORM[body.machine.platform], engine=engine,
                      machine=machine, definitions=str(tree), force=body.force, workflow=body.workflow,
                      step_id=body.step_id, version=body.version)
        if not workflows.spack_kind_available():
            digest = step.digest()
            return Resolved(**common, digest=digest, image_id=f"{step.image}:{step.version}-{digest[:12]}",  # type: ignore[arg-type]
                            key=builder.build_key("workflow", digest, {**machine, "site_engine": site}),
                            failure=workflows.SPACK_KIND_MISSING)
        workflows.write_definition(tree, step)
        image = builder.planned_image(builder.with_tree(self.settings.pipeline, tree, step.arch, workflow=True),
                                      step.image)
        return Resolved(**common, digest=image.digest, image_id=image.tag,  # type: ignore[arg-type]
                        key=builder.build_key("workflow", image.digest, {**machine, "site_engine": site}))
