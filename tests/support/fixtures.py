"""Fixtures every test folder may use: real services when they answer, a clear skip reason when not.

tests/conftest.py imports them, so pytest offers them everywhere under tests/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.config.settings import SSHSettings
from ci.hosts import LocalHost, SSHHost
from ci.local import services as local
from tests.support import services


@pytest.fixture(scope="session")
def docker_available() -> None:
    services.require_docker()


@pytest.fixture(scope="session")
def registry_available() -> str:
    """The loopback registry's address (plain HTTP, 127.0.0.1:5000)."""
    services.require_registry()
    return services.REGISTRY


@pytest.fixture(scope="session")
def slurm_available() -> None:
    services.require_slurm()


@pytest.fixture(scope="session")
def loopback_ssh() -> SSHSettings:
    """Settings for sshd on 127.0.0.1:2222 with the throw-away key from `inv local.up`."""
    services.require_sshd()
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


@pytest.fixture
def searchable_tmp() -> Iterator[Path]:
    """A scratch folder an unprivileged user can reach (pytest's tmp_path is below a 0700 folder of
    root), for tests that read a tree as `nobody`; every folder is made removable again at the end."""
    base = Path(tempfile.mkdtemp(prefix="ci-tests-searchable-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        for directory, _, _ in os.walk(base):
            os.chmod(directory, 0o755)
        shutil.rmtree(base)
