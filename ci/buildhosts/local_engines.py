"""Extra Docker engines on this machine, so a pool of build hosts can be exercised for real.

Each engine is its own `dockerd` with its own data root, exec root, socket, pid file, containerd
and its own bridge (`cci-<name>`, made here with an address of its own), so stopping one leaves the
others and the main engine alone. Never `--bridge=none`: a dockerd started so deletes the
interface `docker0` at start-up, the main engine's bridge, and every container or RUN step of the
main engine then fails ("could not find bridge docker0"). `--iptables=false`: two daemons must not
rewrite each other's firewall chains; builds here use the host network (`ci.docker.network: host`).
`inv local.up` starts them idempotently (`ci/local/services.py`); their sockets are what `ci.build_hosts`
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

    @property
    def bridge(self) -> str:
        return f"cci-{self.name}"[:15]  # an interface name has at most 15 characters

    @property
    def bridge_address(self) -> str:
        """172.30.<n>.1/24, n from the name (b: 118, c: 119; a test's engine gets its own)."""
        number = 20 + sum(self.name.encode()) % 230
        return f"172.30.{number}.1/24"

    def ensure_bridge(self) -> None:
        """The engine's own bridge interface, made once (dockerd uses an existing one with --bridge)."""
        if Path("/sys/class/net", self.bridge).exists():
            return
        for command in (["ip", "link", "add", "name", self.bridge, "type", "bridge"],
                        ["ip", "addr", "add", self.bridge_address, "dev", self.bridge],
                        ["ip", "link", "set", self.bridge, "up"]):
            subprocess.run(command, check=True, capture_output=True)

    def remove_bridge(self) -> None:
        if Path("/sys/class/net", self.bridge).exists():
            subprocess.run(["ip", "link", "delete", self.bridge], check=False, capture_output=True)

    def command(self) -> list[str]:
        return ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                "-H", self.address, "--pidfile", str(self.pidfile), f"--bridge={self.bridge}",
                "--iptables=false", "--ip-masq=false"]

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
        self.ensure_bridge()
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
