"""The service's settings: invoke.yaml's `ci.service` section.

Everything else (definitions, the site, the registry, limits) is the pipeline's own `Settings`;
the service only adds where its database, image store and slot sites live, and how many builds
run at once across all replicas. `ci.service.settings` resolves them against the pipeline's.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, field_validator

from ci.config.base import ConfigModel

DATABASE_VARIABLE = "CI_SERVICE_DATABASE_URL"  # a URL with a password belongs in the environment, not in a file

_HOST = r"^[A-Za-z0-9.:\[\]-]{1,255}\Z"
_URL = r"^https?://[A-Za-z0-9.:\[\]_-]{1,255}(/[A-Za-z0-9._~/-]*)?\Z"


class ServiceConfig(ConfigModel):
    """`ci.service` in invoke.yaml (every key optional); strict: a port is a number, not text."""

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
    workflow_registry: str | None = None  # a git URL (https, ssh, file) or a folder
    # eFlows4HPC (docs/eflows4hpc.md): the registry's branch for `latest`, the software catalog, the git time
    # limit, the base image of steps, where `push` puts images, the server folders `path` may name.
    workflow_registry_branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z")] = "main"
    software_catalog: str | None = None
    software_catalog_branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z")] = "main"
    git_timeout: Annotated[float, Field(gt=0, le=3600)] = 120.0
    base_image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._:/@-]{0,254}\Z")] | None = None
    images_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._:/-]{0,200}/\Z")] | None = None
    eflows_allowed_paths: list[str] = Field(default_factory=list)
    session_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 3600
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    log_tail_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    @field_validator("store", "site_root", "workflow_registry", "software_catalog")
    @classmethod
    def _plain_path(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(ord(ch) < 32 for ch in value)):
            raise ValueError("must be a non-empty path without control characters")
        return value
