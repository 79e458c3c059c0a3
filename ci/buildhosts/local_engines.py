"""Extra Docker engines on this machine, so a pool of build hosts can be exercised for real.

Each engine is its own `dockerd` with its own data root, exec root, socket, pid file and
containerd, and no bridge (`--bridge=none`; builds use the host network, as the local profile's
`ci.docker.network: host` does), so stopping one leaves the others and the main engine alone.
`inv local.up` starts them idempotently (`ci/local.py`); their sockets are what `ci.build_hosts`
names in the local profile's pool (`unix:///run/containers-ci/docker-<name>.sock`).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

STATE_ROOT = Path("/var/lib/containers-ci/engines")
RUN_ROOT = Path("/run/containers-ci")
LOG_DIR = Path("/var/log/containers-ci")
NAMES = ("b", "c")  # the main engine (/run/docker.sock) is the pool's first host


@dataclass(frozen=True)
class LocalEngine:
    """Where one extra engine keeps its state, and how it is reached."""

    name: str

    @property
    def data_root(self) -> Path:
        return STATE_ROOT / self.name / "data"

    @property
    def exec_root(self) -> Path:
        return RUN_ROOT / f"docker-{self.name}"

    @property
    def socket(self) -> Path:
        return RUN_ROOT / f"docker-{self.name}.sock"

    @property
    def pidfile(self) -> Path:
        return RUN_ROOT / f"docker-{self.name}.pid"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def command(self) -> list[str]:
        return ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                "-H", self.address, "--pidfile", str(self.pidfile), "--bridge=none", "--iptables=false",
                "--ip-masq=false"]

    def pid(self) -> int | None:
        """The engine's process id while it runs (its pid file names a live dockerd)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def ready(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return subprocess.run(["/usr/bin/docker", "-H", self.address, "version"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=10, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def start(self) -> None:
        """Start the engine detached from us (its output in /var/log/containers-ci/), unless it runs."""
        if self.pid() is not None:
            return
        for folder in (self.data_root, self.exec_root):
            folder.mkdir(parents=True, exist_ok=True)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with (LOG_DIR / f"dockerd-{self.name}.log").open("ab") as log:
            subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)


def engines(names: tuple[str, ...] = NAMES) -> list[LocalEngine]:
    return [LocalEngine(name) for name in names]


def all_ready() -> bool:
    return all(engine.ready() for engine in engines())


def start_all() -> None:
    for engine in engines():
        engine.start()
