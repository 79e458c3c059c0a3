"""The service's settings: invoke.yaml's `ci.service` section, checked by one pydantic model.

Everything else (definitions, the site, the registry, limits) is the pipeline's own `Settings`;
the service only adds where its database, image store and slot sites live, and how many builds
run at once across all replicas.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ci.config import Settings
from ci.errors import ConfigError
from ci.validation import problems_from

DATABASE_VARIABLE = "CI_SERVICE_DATABASE_URL"  # a URL with a password belongs in the environment, not in a file

_HOST = r"^[A-Za-z0-9.:\[\]-]{1,255}\Z"
_URL = r"^https?://[A-Za-z0-9.:\[\]_-]{1,255}(/[A-Za-z0-9._~/-]*)?\Z"


class ServiceConfig(BaseModel):
    """`ci.service` in invoke.yaml (every key optional)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, regex_engine="python-re")

    database: Annotated[str, Field(pattern=r"^(sqlite|postgresql)(\+[a-z0-9]+)?://[^\s]*\Z")] | None = None
    host: Annotated[str, Field(pattern=_HOST)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    url: Annotated[str, Field(pattern=_URL)] | None = None
    pool: Annotated[int, Field(ge=0, le=256)] = 2
    lease_seconds: Annotated[float, Field(gt=0.5, le=3600)] = 30.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 2
    poll_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    store: str | None = None
    site_root: str | None = None
    workflow_registry: str | None = None
    # eFlows4HPC (docs/eflows4hpc.md): the registry's branch for `latest`, the software catalog, the git time
    # limit, the base image of steps, where `push` puts images, the server folders `path` may name.
    workflow_registry_branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z")] = "main"
    software_catalog: str | None = None
    software_catalog_branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z")] = "main"
    git_timeout: Annotated[float, Field(gt=0, le=3600)] = 120.0
    base_image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._:/@-]{0,254}\Z")] | None = None
    images_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._:/-]{0,200}/\Z")] | None = None
    eflows_allowed_paths: list[str] = []
    session_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 3600
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    log_tail_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    @field_validator("store", "site_root", "workflow_registry", "software_catalog")
    @classmethod
    def _plain_path(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(ord(ch) < 32 for ch in value)):
            raise ValueError("must be a non-empty path without control characters")
        return value


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
    raw = {**dict(settings.section("service")), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        config = ServiceConfig.model_validate(raw)
    except ValidationError as exc:
        problems = problems_from(exc, file="invoke.yaml", prefix="ci.service.")
        raise ConfigError("; ".join(str(problem) for problem in problems)) from None
    state = settings.state_dir / "service"
    database = os.environ.get(DATABASE_VARIABLE) or config.database or f"sqlite:///{state / 'service.db'}"

    def local_path(value: str | None, default: Path) -> Path:
        if value is None:
            return default
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else settings.project_dir / path

    site_root = config.site_root or posixpath.join(settings.site.root, "service")
    from ci.service.eflows.registry import settings_from as eflows_settings
    from ci.spack.settings import spack_settings

    eflows = eflows_settings(config.model_dump(), project_dir=settings.project_dir, state_dir=state,
                             spack_builder_image=spack_settings(settings.section("spack")).builder_image,
                             registry=config.workflow_registry)
    return ServiceSettings(
        pipeline=settings, database_url=database, host=config.host, port=config.port,
        url=(config.url or f"http://{config.host}:{config.port}").rstrip("/"), pool=config.pool,
        lease_seconds=config.lease_seconds, max_attempts=config.max_attempts, poll_interval=config.poll_interval,
        state_dir=state, store=local_path(config.store, state / "images"), site_root=site_root,
        workflow_registry=local_path(config.workflow_registry, Path()) if config.workflow_registry
        and "://" not in config.workflow_registry else None,
        max_body_bytes=config.max_body_bytes, log_tail_bytes=config.log_tail_bytes, eflows=eflows,
    )
