"""Small builders for definition trees in tmp_path, shared by the spine's tests."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXAMPLES = PROJECT_DIR / "container_definitions"
BASE_IMAGE = "containers-ci/debian:bookworm"


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    """Write `{relative path: text}` under `root` (text is dedented); return `root`."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def definition(
    root: Path,
    name: str,
    *,
    dockerfile: str = f"FROM {BASE_IMAGE}\n",
    container_yaml: str | None = None,
    files: Mapping[str, str] | None = None,
    arch: str = "amd64",
) -> Path:
    """Create one definition folder `root/<arch>/<name>` (Dockerfile, container.yaml, files); return it."""
    folder = root / arch / name
    contents: dict[str, str] = {"Dockerfile": dockerfile, **(files or {})}
    if container_yaml is not None:
        contents["container.yaml"] = container_yaml
    write_tree(folder, contents)
    return folder


def missing(service: str, how: str) -> None:
    """A service a test needs is absent: skip locally, fail under CI_REQUIRE_SERVICES=1 (CI starts every service)."""
    unmet(f"{service} is not running here ({how}); `inv local.up` starts it")


def unmet(message: str) -> None:
    """Something a test needs is missing: skip locally with `message`, fail under CI_REQUIRE_SERVICES=1."""
    if os.environ.get("CI_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
