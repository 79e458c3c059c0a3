"""Runner jobs as the unprivileged job user (`ci-runner`, made by `inv local.up`), for the tests and
benchmark of the per-job Docker daemon.

Rootless Docker refuses root, and a site's allocator submits as its own service user anyway: here
the allocator reaches "the cluster" through the loopback sshd as `ci-runner` (the throw-away key is
in that user's authorized_keys), so sbatch, the job folder, the JIT files and the logs are that
user's. Everything the job user must read (the stand-in runner, its run.sh) lives in a folder it
owns under /var/tmp, not in pytest's 0700 tmp_path; Debian's python3 runs the stand-in (the
project's interpreter is under root's home).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci.config.settings import Settings, deep_merge, load_settings
from ci.local import services as local

from .testing import PROJECT_DIR, STANDIN, project_config

SHARED_ROOT = Path("/var/tmp/ci-runner-tests")
PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class JobUserSite:
    """Folders of one test, owned by the job user: the runner folder, job_dir, node_tmp."""

    root: Path
    prefix: str

    @property
    def runner_dir(self) -> Path:
        return self.root / "runner"

    @property
    def job_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def node_tmp(self) -> str:
        return f"/tmp/cirt-{self.prefix}"  # short: the daemon's sockets live below it

    def log(self, runner: str) -> str:
        path = self.job_dir / "logs" / f"{runner}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> dict[str, str]:
        folder = self.job_dir / "logs"
        return {path.stem: path.read_text(errors="replace") for path in folder.glob("*.out")} if folder.exists() else {}


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for folder, dirs, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)


@contextmanager
def job_user_site(prefix: str, *, max_wait: float = 60) -> Iterator[JobUserSite]:
    """The test's folders, given to the job user; removed afterwards (with whatever a job left)."""
    root = SHARED_ROOT / prefix
    SHARED_ROOT.mkdir(mode=0o755, exist_ok=True)
    SHARED_ROOT.chmod(0o755)
    (root / "runner").mkdir(parents=True)
    shutil.copy(STANDIN, root / "runner" / "runner.py")
    run = root / "runner" / "run.sh"
    run.write_text(f"#!/bin/sh\nexec env STANDIN_MAX_WAIT={max_wait:g} {PYTHON} {root / 'runner' / 'runner.py'}\n")
    run.chmod(0o755)
    (root / "evidence").mkdir()
    _chown_tree(root, local.RUNNER_USER)
    site = JobUserSite(root, prefix)
    try:
        yield site
    finally:
        shutil.rmtree(root, ignore_errors=True)
        leftover = Path(site.node_tmp)
        if leftover.exists():  # a failed test may leave a job folder: files of subordinate ids need the namespace
            subprocess.run(["rm", "-rf", str(leftover)], check=False)


def job_user_settings(api_url: str, repository: str, tmp_path: Path, site: JobUserSite,
                      targets: Sequence[Mapping[str, Any]], **runners: Any) -> Settings:
    """Project settings whose allocator submits as the job user over the loopback sshd."""
    ssh = {"host": "127.0.0.1", "port": local.SSHD_PORT, "user": local.RUNNER_USER,
           "key_filename": str(local.loopback_key()), "known_hosts": str(local.loopback_known_hosts())}
    section = {
        "github": {"api_url": api_url, "repository": repository},
        "targets": [dict(t) for t in targets], "poll_interval": 0.5, "reconcile_interval": 20,
        "runner_dir": str(site.runner_dir), "prefix": site.prefix, "metrics": None,
        "state_dir": str(tmp_path / "state" / "runners"), "job_dir": str(site.job_dir), "node_tmp": site.node_tmp,
        **runners,
    }
    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"),
                                        "site": {"root": str(site.root / "site"), "scheduler": "slurm", "ssh": ssh}})
    raw["runners"] = section
    return load_settings(raw, PROJECT_DIR, profile="local")


def user_processes(marker: str) -> list[str]:
    """Command lines of the job user's processes that name `marker` (a job folder, a node_tmp)."""
    uid = pwd.getpwnam(local.RUNNER_USER).pw_uid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in command:
            found.append(f"{entry.name}: {command.strip()}")
    return found


def leftovers(node_tmp: str) -> list[str]:
    """What a finished job may have left under node_tmp: its folder, its work link, any socket."""
    root = Path(node_tmp)
    if not root.exists():
        return []
    found = [str(path) for path in root.iterdir() if path.name.startswith("runner-") or path.name.endswith(".work")]
    for folder, _, files in os.walk(root):
        found += [os.path.join(folder, name) for name in files if name.endswith(".sock")]
    return found
