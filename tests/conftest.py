"""Shared fixtures: real services when they answer, a clear skip reason when they do not.

`.ci/run` starts every service (via `inv local.up`), so in CI nothing here is skipped; set
CI_REQUIRE_SERVICES=1 to turn a missing service into a failure instead of a skip. The fixtures
live in tests/support/fixtures.py; importing them here offers them to every test folder.
"""

from __future__ import annotations

from tests.support.fixtures import (  # noqa: F401 - pytest finds fixtures by name in a conftest
    docker_available,
    local_host,
    loopback_ssh,
    no_openstack_environment,
    registry_available,
    searchable_tmp,
    slurm_available,
    ssh_host,
)

