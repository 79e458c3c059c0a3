"""Small builders for definition trees in tmp_path, shared by the spine's tests, and ways to run over them
(`inv` without an engine, a check as the unprivileged user nobody)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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


NOBODY = 65534


def as_nobody(function: Callable[[], Any]) -> Any:
    """`function()` as the unprivileged user nobody, its result (JSON) back through a pipe.

    Root reads every file, so a test about files the running user cannot read runs its check as
    nobody in a forked child; a non-root user is unprivileged already and runs it in place. Every
    folder on the way must be searchable by nobody (not pytest's tmp_path: /tmp/pytest-of-root is 0700).
    """
    if os.geteuid() != 0:
        return function()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's result comes back through the pipe
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(json.dumps(function()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    _, status = os.waitpid(child, 0)
    assert status == 0 and output, f"the check as nobody failed (wait status {status})"
    return json.loads(output)
