"""Small builders for definition trees in tmp_path, shared by the spine's tests."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

from tests.support.services import BASE_IMAGE


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
