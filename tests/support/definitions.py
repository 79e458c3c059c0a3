"""Small builders for definition trees in tmp_path, shared by the spine's tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

from tests.support.paths import PROJECT_DIR
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


def inv_without_engine(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`inv ARGS` from the project, as on a machine without Docker (an engine address that does not
    answer: plans are the same, and quick), with state and data under `home`; never raises on exit."""
    inv = Path(sys.executable).parent / "inv"
    config = home / "no-engine.yaml"
    config.write_text("ci:\n  docker:\n    host: unix:///nonexistent/docker.sock\n")
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state"), "XDG_DATA_HOME": str(home / "data")}
    return subprocess.run([str(inv), "-f", str(config), *args], cwd=PROJECT_DIR, capture_output=True, text=True,
                          errors="replace", timeout=timeout, env=env, check=False)
