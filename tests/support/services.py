"""The services a test needs (Docker, the registry, Slurm, sshd, PostgreSQL, ...): present, or a clear skip.

`.ci/run` starts every service (via `inv local.up`), so in CI nothing here skips: with
CI_REQUIRE_SERVICES=1 a missing service fails the test instead. Each check is here once, with one
wording, so a skipped test always says what is missing and which command provides it.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from ci.local import services as local

BASE_IMAGE = "containers-ci/debian:bookworm"  # `inv local.base-image`: every test image starts from it
DOCKER = "/usr/bin/docker"
REGISTRY = local.REGISTRY_ADDRESS


def unmet(message: str) -> None:
    """Something a test needs is missing: skip locally with `message`, fail under CI_REQUIRE_SERVICES=1."""
    if os.environ.get("CI_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def missing(service: str, how: str) -> None:
    """A service a test needs is absent: skip locally, fail under CI_REQUIRE_SERVICES=1 (CI starts every service)."""
    unmet(f"{service} is not running here ({how}); `inv local.up` starts it")


def require(ready: bool, what: str) -> None:
    """`unmet` unless `ready`: for a check the caller has made (`require(local.x_ready(), "x")`)."""
    if not ready:
        unmet(f"{what} is not available here; `inv local.up` sets it up")


def require_docker() -> None:
    if not local.docker_ready():
        missing("the Docker engine", "`docker version` does not answer")


def require_base_image() -> None:
    require_docker()
    found = subprocess.run([DOCKER, "image", "inspect", BASE_IMAGE], capture_output=True, check=False)
    if found.returncode != 0:
        unmet(f"the base image {BASE_IMAGE} is not built here; `inv local.base-image` builds it")


def require_registry() -> None:
    if not local.registry_ready():
        missing(f"the registry on {REGISTRY}", "its /v2/ does not answer")


def require_slurm() -> None:
    """Slurm that takes jobs: munge, slurmctld and a slurmd in the idle state."""
    if not local.slurm_ready():
        missing("Slurm (munge, slurmctld, slurmd)", "the node does not take jobs")


def require_sshd() -> None:
    if not local.sshd_ready():
        missing(f"sshd on 127.0.0.1:{local.SSHD_PORT}", "no SSH banner on the port, or no loopback key")


def require_charliecloud() -> None:
    if not local.charliecloud_ready():
        missing("Charliecloud", "ch-convert, ch-run, squashfs-tools or python3-lark is missing")


def require_postgresql() -> None:
    if not local.postgresql_ready():
        missing("PostgreSQL", "`pg_isready` or `psql -d postgres` as root does not answer")


def require_chromium() -> None:
    if not local.chromium_ready():
        missing("Chromium", f"{local.CHROMIUM} --headless --version does not answer")


def require_site_services() -> None:
    """What a pipeline run on this machine needs: Docker + the base image, the registry, Slurm, Charliecloud."""
    require_base_image()
    require_registry()
    require_slurm()
    require_charliecloud()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
