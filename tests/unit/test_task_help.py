"""`inv TASK --help` shows the task's help for every task, including those with a positional argument.

Invoke hands the word after a task to a missing positional argument even when it is `--help`, so
`inv render --help` used to look up an image named "--help" and `inv publish.prune --help`
complained about a missing argument. The tasks are found in the namespace, so a new task with a
positional argument is covered without editing this file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import PROJECT_DIR

INV = str(Path(sys.executable).parent / "inv")


def _tasks_with_positional_arguments() -> list[str]:
    sys.path.insert(0, str(PROJECT_DIR))
    try:
        import tasks
    finally:
        sys.path.remove(str(PROJECT_DIR))
    names = []
    for name in tasks.ns.task_names:
        task = tasks.ns[name]
        if task.positional:
            names.append(name)
    return sorted(names)


POSITIONAL = _tasks_with_positional_arguments()


def test_some_tasks_take_a_positional_argument() -> None:
    assert {"render", "publish.verify", "publish.prune", "service.client"} <= set(POSITIONAL)


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("name", POSITIONAL)
def test_help_after_a_task_with_a_positional_argument(name: str, flag: str, tmp_path: Path) -> None:
    done = subprocess.run([INV, name, flag], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
                          check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert f"Usage: inv[oke] [--core-opts] {name} " in done.stdout
    assert "Docstring:" in done.stdout and "error" not in done.stderr.lower()


def test_a_required_flag_left_out_is_named() -> None:
    done = subprocess.run([INV, "publish.prune", "somewhere"], cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2 and "--keep N" in done.stderr
