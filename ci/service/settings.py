"""The service's resolved settings: `ci.service` (ci/config/service.py) made concrete against the
pipeline's settings: absolute paths, the database URL (from the environment when it holds a password).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ci.config.base import validated
from ci.config.service import DATABASE_VARIABLE, ServiceConfig
from ci.config.settings import Settings


class ServiceSettings(BaseModel):
    """The resolved settings: absolute paths, the database URL, and the pipeline's settings."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    pipeline: Settings
    database_url: str
    host: str
    port: int
    url: str
    pool: int
    lease_seconds: float
    max_attempts: int
    poll_interval: float
    state_dir: Path
    store: Path
    site_root: str
    workflow_registry: Path | None
    max_body_bytes: int
    log_tail_bytes: int
    eflows: Any = None  # ci.service.eflows.registry.EflowsSettings

    @property
    def builds_dir(self) -> Path:
        """Per-build work folders (the redacted log, the child's private files)."""
        return self.state_dir / "builds"

    def slot_root(self, slot: int) -> str:
        """Each pool slot is a site of its own, so builds in different slots never meet on one site lock."""
        return posixpath.join(self.site_root, f"slot-{slot}")


def service_settings(settings: Settings, overrides: dict[str, Any] | None = None) -> ServiceSettings:
    """Check `ci.service` (plus flag overrides) and resolve its defaults against the pipeline's settings."""
    changed = {key: value for key, value in (overrides or {}).items() if value is not None}
    config = settings.service if not changed else \
        validated(ServiceConfig, {**settings.service.model_dump(exclude_defaults=True), **changed}, "ci.service")
    state = settings.state_dir / "service"
    database = os.environ.get(DATABASE_VARIABLE) or config.database or f"sqlite:///{state / 'service.db'}"

    def local_path(value: str | None, default: Path) -> Path:
        if value is None:
            return default
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else settings.project_dir / path

    site_root = config.site_root or posixpath.join(settings.site.root, "service")
    from ci.service.eflows.registry import settings_from as eflows_settings

    eflows = eflows_settings(config.model_dump(), project_dir=settings.project_dir, state_dir=state,
                             spack_builder_image=settings.spack.builder_image, registry=config.workflow_registry)
    return ServiceSettings(
        pipeline=settings, database_url=database, host=config.host, port=config.port,
        url=(config.url or f"http://{config.host}:{config.port}").rstrip("/"), pool=config.pool,
        lease_seconds=config.lease_seconds, max_attempts=config.max_attempts, poll_interval=config.poll_interval,
        state_dir=state, store=local_path(config.store, state / "images"), site_root=site_root,
        workflow_registry=local_path(config.workflow_registry, Path()) if config.workflow_registry
        and "://" not in config.workflow_registry else None,
        max_body_bytes=config.max_body_bytes, log_tail_bytes=config.log_tail_bytes, eflows=eflows,
    )
