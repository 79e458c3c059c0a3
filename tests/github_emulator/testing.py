"""Helpers for the allocator's tests: settings aimed at an emulator, a stand-in runner folder,
an allocator running in a thread, and Slurm clean-up."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ci.config.settings import Settings, deep_merge, load_settings
from ci.runners import control
from ci.runners.allocator import Allocator
from tests.support.config import project_config
from tests.support.paths import PROJECT_DIR

from .emulator import Emulator

STANDIN = Path(__file__).resolve().parent / "runner.py"

# Tiny runner jobs: one CPU, little memory, a short limit (the local Slurm has 2 CPUs).
TINY = {"cpus": 1, "mem": "100M", "time": "00:05:00"}


def standin_runner_dir(folder: Path, *, fail_marker: Path | None = None, max_wait: float = 120) -> Path:
    """A runner folder whose ./run.sh starts the stand-in runner (instead of GitHub's runner)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = f"STANDIN_MAX_WAIT={max_wait:g}" + (f" STANDIN_FAIL_MARKER={fail_marker}" if fail_marker else "")
    script = folder / "run.sh"
    script.write_text(f"#!/bin/sh\nexec env {env} {sys.executable} {STANDIN}\n")
    script.chmod(0o755)
    return folder


def target(name: str, labels: Sequence[str], **more: Any) -> dict[str, Any]:
    return {"name": name, "labels": list(labels), "slurm": {**TINY, **more.pop("slurm", {})}, "max": 20,
            "idle_timeout": 2, **more}


def settings_for(emulator: Emulator, tmp_path: Path, targets: Sequence[Mapping[str, Any]], **more: Any) -> Settings:
    github = {"organisation": emulator.github.organisation} if emulator.github.organisation else {}
    return settings_for_api(emulator.url, emulator.github.repository, tmp_path, targets, github=github, **more)


def settings_for_api(api_url: str, repository: str, tmp_path: Path, targets: Sequence[Mapping[str, Any]], *,
                     prefix: str | None = None, scheduler: str = "slurm", github: Mapping[str, Any] | None = None,
                     **runners: Any) -> Settings:
    """Project settings whose ci.runners serves `repository` at `api_url` with the stand-in runner."""
    section = {
        "github": {"api_url": api_url, "repository": repository, **(github or {})},
        "targets": [dict(t) for t in targets], "poll_interval": 0.5, "reconcile_interval": 20,
        "runner_dir": str(standin_runner_dir(tmp_path / "runner")), "prefix": prefix or unique_prefix(),
        "metrics": None, **runners,
    }
    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"),
                                        "site": {"root": str(tmp_path / "site"), "scheduler": scheduler}})
    raw["runners"] = section
    return load_settings(raw, PROJECT_DIR, profile="local")


def unique_prefix() -> str:
    return "t" + secrets.token_hex(3)


class Running:
    """`control.serve` in a thread (as `inv runners.serve` runs it, without the signal handlers)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.allocator: Allocator | None = None
        self.urls: dict[str, str] = {}
        self.said: list[str] = []
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="allocator", daemon=True)

    def _started(self, allocator: Allocator, urls: dict[str, str]) -> None:
        self.allocator, self.urls = allocator, urls
        self._ready.set()

    def _main(self) -> None:
        try:
            control.serve(self.settings, self.said.append, on_start=self._started)
        except BaseException as exc:  # reported by start() or stop()
            self.error = exc
            self._ready.set()

    def start(self) -> Running:
        self._thread.start()
        self._ready.wait(30)
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        if self.allocator is not None:
            self.allocator.stop()
        self._thread.join(60)
        if self.error:
            raise self.error


@contextmanager
def serving(settings: Settings) -> Iterator[Running]:
    running = Running(settings).start()
    try:
        yield running
    finally:
        running.stop()


def our_jobs(prefix: str) -> list[tuple[str, str, str]]:
    """(id, name, state) of every unfinished Slurm job whose name starts with `prefix.`."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T"], capture_output=True, text=True, check=False).stdout
    rows = [tuple(line.split("|", 2)) for line in out.splitlines() if line.strip()]
    return [(row[0], row[1], row[2]) for row in rows if len(row) == 3 and row[1].startswith(f"{prefix}.")]


def cancel_all(prefix: str) -> None:
    ids = [job_id for job_id, _, _ in our_jobs(prefix)]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, check=False)
