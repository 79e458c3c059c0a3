"""`ci.site_env`: which site paths make the site-environment image (`inv site.env`), and its name."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from ci.config.base import ConfigModel, validated
from ci.validation import has_control

_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/-]{0,127}\Z")


class SiteEnvSettings(ConfigModel):
    """`ci.site_env`: which site paths make the site-env image, and its name."""

    paths: list[str] = Field(default_factory=list)
    image: str = "site-env"
    root: str = "/"

    @field_validator("paths")
    @classmethod
    def _absolute_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/") or has_control(path) or ".." in path.split("/") or path.rstrip("/") == "":
                raise ValueError(f"{path!r} must be an absolute path without '..' (e.g. /opt/cray/libfabric)")
        return [path.rstrip("/") for path in paths]

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, root: str) -> str:
        if not root.startswith("/") or has_control(root) or ".." in root.split("/"):
            raise ValueError(f"{root!r} must be an absolute path without '..'")
        return root

    @field_validator("image")
    @classmethod
    def _image_name(cls, image: str) -> str:
        if not _IMAGE.match(image):
            raise ValueError(f"{image!r} is not an image name (lower case letters, digits, . _ - /)")
        return image

    @property
    def enabled(self) -> bool:
        return bool(self.paths)


def site_env_settings(raw: Mapping[str, Any]) -> SiteEnvSettings:
    """`ci.site_env` as written, checked (one ConfigError line per problem)."""
    return validated(SiteEnvSettings, dict(raw), "ci.site_env")
