"""The local default's services, installed and started idempotently (`inv local.up`).

Each service is a small recipe: is it answering? if not, is it installed? install it from
Debian, start it, and wait until it answers (a readiness probe with a timeout, never a sleep).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.errors import CIError

LOG_DIR = Path("/var/log/containers-ci")


@dataclass(frozen=True)
class Service:
    name: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ready: Callable[[], bool]
    start: Callable[[], None]
    timeout: float = 60.0


def _quiet(command: Sequence[str], timeout: float = 10) -> bool:
    try:
        return subprocess.run(list(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _spawn(command: Sequence[str], log_name: str, env: dict[str, str] | None = None) -> None:
    """Start a daemon detached from us, its output in /var/log/containers-ci/."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / log_name).open("ab") as log:
        subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env={**os.environ, **(env or {})})


def docker_ready() -> bool:
    return _quiet(["/usr/bin/docker", "version"]) if Path("/usr/bin/docker").exists() else _quiet(["docker", "version"])


def start_docker() -> None:
    _spawn(["dockerd"], "dockerd.log")


DOCKER = Service("docker", ("docker.io", "debootstrap"), ("dockerd", "debootstrap"), docker_ready, start_docker)


def apt_install(packages: Sequence[str], say: Callable[[str], None]) -> None:
    say(f"installing {' '.join(packages)} from Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                    *packages]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CIError(f"`{' '.join(command)}` failed: {result.stderr.strip().splitlines()[-1:]}")


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.2
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    raise CIError(f"{what} did not become ready within {timeout:.0f}s; see {LOG_DIR}")


def ensure(service: Service, say: Callable[[str], None]) -> str:
    if service.ready():
        return f"{service.name}: already running"
    missing = [binary for binary in service.binaries if shutil.which(binary) is None
               and not Path("/usr/sbin", binary).exists() and not Path("/sbin", binary).exists()]
    if missing:
        if os.geteuid() != 0:
            raise CIError(f"{service.name} is not installed ({', '.join(missing)} missing); run `inv local.up` as root")
        apt_install(service.packages, say)
    service.start()
    wait_until(service.ready, service.timeout, service.name)
    return f"{service.name}: started"


def up(services: Sequence[Service], say: Callable[[str], None]) -> list[str]:
    return [ensure(service, say) for service in services]


# --------------------------------------------------------------------------------------------
# sshd on 127.0.0.1: a loopback "remote" site and build VM for the SSH code paths
# --------------------------------------------------------------------------------------------

SSHD_DIR = Path("/etc/containers-ci/sshd")
SSHD_PORT = 2222


def loopback_key() -> Path:
    """The throw-away client key that the loopback sshd accepts (created by `inv local.up`)."""
    from ci.config import default_state_dir

    return default_state_dir() / "ssh" / "id_ed25519"


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH")
    except OSError:
        return False


def sshd_ready() -> bool:
    return _port_open(SSHD_PORT) and loopback_key().exists()


def start_sshd() -> None:
    SSHD_DIR.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    host_key = SSHD_DIR / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    key = loopback_key()
    key.parent.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "containers-ci loopback",
                        "-f", str(key)], check=True)
    authorized = SSHD_DIR / "authorized_keys"
    public = key.with_suffix(".pub").read_text()
    existing = authorized.read_text() if authorized.exists() else ""
    if public not in existing:
        authorized.write_text(existing + public)
    authorized.chmod(0o600)
    config = SSHD_DIR / "sshd_config"
    config.write_text(
        f"Port {SSHD_PORT}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized} .ssh/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nAllowTcpForwarding yes\n"
        f"PidFile {SSHD_DIR}/sshd.pid\nSubsystem sftp internal-sftp\nMaxSessions 50\nMaxStartups 50\n"
    )
    if not _port_open(SSHD_PORT):
        _spawn(["/usr/sbin/sshd", "-f", str(config), "-E", str(LOG_DIR / "sshd.log")], "sshd-start.log")


SSHD = Service("sshd", ("openssh-server", "openssh-client"), ("sshd", "ssh-keygen"), sshd_ready, start_sshd)
