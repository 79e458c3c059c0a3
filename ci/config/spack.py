"""The `ci.spack` settings: the site template, per-architecture targets, images and the build cache.

One model, read once; a kind and the janitor receive it typed, never the raw dictionary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError, field_validator

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


_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._~/-]*)?\Z")
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?\Z")
_REGION = re.compile(r"^[a-z0-9-]{1,40}\Z")
_DEFINITION = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}\Z")


class S3Settings(ConfigModel):
    """`ci.spack.s3`: where an `s3://` build cache lives and which variables hold its credentials.

    The credentials' values never enter the configuration: the build gets them as BuildKit secrets
    (ids = these variable names), the janitor reads them from the same variables.
    """


    endpoint: str | None = None  # an S3-compatible server, e.g. https://a3s.fi; null: AWS
    region: str | None = None
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "@" in value:  # never echo what may be a credential
            raise invalid("names credentials in the URL", "write the server's URL alone; credentials come from "
                          "the variables access_key_env and secret_key_env")
        return check_text(value, what="S3 endpoint", max_length=300, pattern=_URL,
                          fix="write the server's URL without credentials, e.g. https://a3s.fi or "
                              "http://127.0.0.1:9000")

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_text(value, what="S3 region", max_length=40, pattern=_REGION, fix="write e.g. us-east-1")

    @field_validator("access_key_env", "secret_key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        return check_text(value, what="environment variable name", max_length=100, pattern=_ENV_NAME,
                          fix="use capital letters, digits and underscores, e.g. AWS_ACCESS_KEY_ID")


class JanitorSettings(ConfigModel):
    """`ci.spack.janitor`: what the scheduled janitor (`inv spack.janitor --scheduled`, weekly) does."""


    delete: bool = False  # the opt-in: without it the weekly run only lists what would go
    max_age: float = Field(default=30.0, ge=0, le=36500)  # days an unreferenced entry is kept


class SpackSettings(ConfigModel):
    """`ci.spack` in invoke.yaml (documented there and in docs/spack.md).

    `builder_image` and `runtime_image` name either definitions of the same architecture folder
    (the bundled `spack-builder` and `spack-runtime`: parents in the graph, built before the Spack
    definitions that use them and only when they changed; invoke.yaml's top level) or images made
    elsewhere. The local profile (and these defaults) name the stand-in builder of
    `inv local.spack-builder` and the local base image.
    """


    template: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_TEMPLATE))
    targets: dict[str, str] = Field(default_factory=lambda: {"amd64": "target=x86_64_v3", "arm64": "target=aarch64"})
    # the defaults are the local ones (stand-in builder, local base image); invoke.yaml's top level
    # names the bundled definitions for every other profile
    builder_image: str = "containers-ci/spack-builder:stand-in"
    runtime_image: str = "containers-ci/debian:bookworm"
    runtime_packages: tuple[str, ...] = ()
    buildcache: str | None = "oci+http://127.0.0.1:5000/spack-cache"
    signed: bool = False
    signing_key_env: str = "SPACK_SIGNING_KEY"
    s3: S3Settings = Field(default_factory=S3Settings)
    janitor: JanitorSettings = Field(default_factory=JanitorSettings)
    # definitions built only as parents of Spack definitions (or when named by --only), never by a
    # plain `inv build-all`: the real builder and runtime need the network the local profile lacks
    builders: tuple[str, ...] = ("spack-builder", "spack-runtime")
    # Spacktainers' files root: `spacktainer: files:` sources not in the definition folder are looked
    # up here (relative to the definitions folder), where Spacktainers keeps `files/<name>/...`
    files_root: str = "../spacktainer"

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
        if "@" in value.split("://", 1)[-1].split("/", 1)[0]:  # never echo what may be a credential
            raise invalid("names credentials in the URL (user@ or key:secret@)",
                          "remove them; an S3 cache's credentials come from the variables of ci.spack.s3, "
                          "an OCI cache's from the registry login")
        check_text(value, what="build cache URL", max_length=500, pattern=_CACHE_URL,
                   fix="use oci://host/name, oci+http://127.0.0.1:5000/name, s3://bucket/path or a directory")
        if value.startswith("s3://") and not _S3_URL.match(value):
            raise invalid(f"{value!r} is not s3://bucket/path with a valid bucket name",
                          "name the bucket in lower case (3-63 letters, digits, '.', '-'); credentials and the "
                          "endpoint go to ci.spack.s3 and the environment, never into the URL")
        return value

    @field_validator("builders")
    @classmethod
    def _builders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            check_text(name, what="definition name", max_length=128, pattern=_DEFINITION,
                       fix="name a definition folder, e.g. spack-builder")
        return value

    @field_validator("files_root")
    @classmethod
    def _files_root(cls, value: str) -> str:
        return check_text(value, what="folder", max_length=500, pattern=re.compile(r"^[^\x00-\x1f\x7f]+\Z"),
                          fix="write a folder relative to the definitions folder, e.g. ../spacktainer")

    @field_validator("signing_key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        return check_text(value, what="environment variable name", max_length=100, pattern=_ENV_NAME,
                          fix="use capital letters, digits and underscores, e.g. SPACK_SIGNING_KEY")

    @property
    def s3_cache(self) -> bool:
        return bool(self.buildcache and self.buildcache.startswith("s3://"))

    def build_secrets(self) -> tuple[str, ...]:
        """The BuildKit secrets a Spack build gets: the signing key, and an S3 cache's credentials."""
        if not self.buildcache:
            return ()
        names = [self.signing_key_env]
        if self.s3_cache:
            names += [self.s3.access_key_env, self.s3.secret_key_env]
        return tuple(dict.fromkeys(names))

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
