"""The `ci.spack` settings: the site template, per-architecture targets, images and the build cache.

One model, read once; a kind and the janitor receive it typed, never the raw dictionary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, field_validator

from ci.config.base import ConfigModel
from ci.errors import ConfigError
from ci.validation import check_text, invalid, problems_from

_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*\Z")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*\Z")
_CACHE_URL = re.compile(r"^(oci://|oci\+http://|s3://|https?://|file://|/)[^\s'\"\\]*\Z")

DEFAULT_TEMPLATE: dict[str, Any] = {
    "spack": {
        "view": "/opt/view",
        "concretizer": {"unify": True, "reuse": False, "targets": {"granularity": "generic"}},
        "config": {"install_tree": {"root": "/opt/software"}, "build_jobs": 2},
        "packages": {"all": {"providers": {"mpi": ["mpich"]}}},
        "specs": [],
    },
}


class SpackSettings(ConfigModel):
    """`ci.spack` in invoke.yaml (documented there, in docs/kinds/spack.md and docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_TEMPLATE))
    targets: dict[str, str] = Field(default_factory=lambda: {"amd64": "target=x86_64_v3", "arm64": "target=aarch64"})
    builder_image: str = "containers-ci/spack-builder:stand-in"
    runtime_image: str = "containers-ci/debian:bookworm"
    runtime_packages: tuple[str, ...] = ()
    buildcache: str | None = "oci+http://127.0.0.1:5000/spack-cache"
    signed: bool = False
    signing_key_env: str = "SPACK_SIGNING_KEY"

    @field_validator("template")
    @classmethod
    def _template(cls, value: dict[str, Any]) -> dict[str, Any]:
        if set(value) != {"spack"} or not isinstance(value["spack"], Mapping):
            raise invalid("the template must be one mapping under the key 'spack'",
                          "write it as 'spack: {view: ..., concretizer: ..., config: ...}'")
        return value

    @field_validator("builder_image", "runtime_image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_text(value, what="image reference", max_length=255, pattern=_IMAGE,
                          fix="name an image, e.g. registry.example.org/spack/builder:1.0")

    @field_validator("runtime_packages")
    @classmethod
    def _packages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            check_text(name, what="Debian package name", max_length=100, pattern=re.compile(r"^[a-z0-9][a-z0-9+.-]*\Z"),
                       fix="name a Debian package, e.g. libgomp1")
        return value

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        for arch, requirement in value.items():
            check_text(requirement, what=f"target of {arch}", max_length=200,
                       pattern=re.compile(r"^[A-Za-z0-9%@=_.:+~ -]+\Z"),
                       fix="write a Spack requirement, e.g. 'target=x86_64_v3' or '%gcc@12 target=zen3'")
        return value

    @field_validator("buildcache")
    @classmethod
    def _cache(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_text(value, what="build cache URL", max_length=500, pattern=_CACHE_URL,
                          fix="use oci://host/name, oci+http://127.0.0.1:5000/name, s3://bucket/path or a directory")

    @field_validator("signing_key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        return check_text(value, what="environment variable name", max_length=100, pattern=_ENV_NAME,
                          fix="use capital letters, digits and underscores, e.g. SPACK_SIGNING_KEY")

    def target_layer(self, arch: str) -> dict[str, Any]:
        """The per-architecture part merged between the template and the definition."""
        requirement = self.targets.get(arch)
        if not requirement:
            return {}
        return {"spack": {"packages": {"all": {"require": [requirement]}}}}


def spack_settings(raw: Mapping[str, Any] | None, *, file: str = "invoke.yaml") -> SpackSettings:
    """The checked `ci.spack` section; every problem in one ConfigError."""
    try:
        return SpackSettings.model_validate(dict(raw or {}))
    except ValidationError as exc:
        problems = problems_from(exc, file=file, prefix="ci.spack", model=SpackSettings)
        raise ConfigError("\n".join(str(p) for p in problems)) from None
