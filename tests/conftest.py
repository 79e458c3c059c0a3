"""Shared fixtures: real services when they answer, a clear skip reason when they do not.

`.ci/run` starts every service (via `inv local.up`), so in CI nothing here is skipped; set
CI_REQUIRE_SERVICES=1 to turn a missing service into a failure instead of a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import missing as _missing

from ci.config.settings import SSHSettings
from ci.hosts import LocalHost, SSHHost
from ci.local import services as local

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXAMPLES = PROJECT_DIR / "container_definitions"


@pytest.fixture(scope="session")
def docker_available() -> None:
    if not local.docker_ready():
        _missing("the Docker engine", "`docker version` does not answer")


@pytest.fixture(scope="session")
def loopback_ssh() -> SSHSettings:
    """Settings for sshd on 127.0.0.1:2222 with the throw-away key from `inv local.up`."""
    if not local.sshd_ready():
        _missing("sshd on 127.0.0.1:2222", "no SSH banner on the port, or no loopback key")
    return SSHSettings(host="127.0.0.1", port=local.SSHD_PORT, user="root", key_filename=str(local.loopback_key()),
                       known_hosts=str(local.loopback_known_hosts()))


@pytest.fixture
def ssh_host(loopback_ssh: SSHSettings) -> Iterator[SSHHost]:
    host = SSHHost(loopback_ssh)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def no_openstack_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloud tests see only the configuration they write: no OS_* variables from the machine."""
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def local_host() -> LocalHost:
    return LocalHost()
