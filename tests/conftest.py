"""Shared fixtures: real services when they answer, a clear skip reason when they do not.

`.ci/run` starts every service (via `inv local.up`), so in CI nothing here is skipped; set
CI_REQUIRE_SERVICES=1 to turn a missing service into a failure instead of a skip. The fixtures
live in tests/support/fixtures.py; importing them here offers them to every test folder.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

from tests.support.fixtures import (  # noqa: F401 - pytest finds fixtures by name in a conftest
    docker_available,
    local_host,
    loopback_ssh,
    no_openstack_environment,
    registry_available,
    slurm_available,
    ssh_host,
)

# The suite is a package (tests/__init__.py): helpers are `tests.support.*`, not top-level modules
# found through pytest's rootdir. Tests written on other branches before this move still say
# `from helpers import unmet` or `from site_helpers import require`; until they are merged and
# rewritten, these names resolve to the same module objects. Nothing in this tree uses them
# (tests/unit/test_test_support.py checks that), so the table only shrinks.
MERGE_ALIASES = {
    "helpers": "tests.helpers",
    "site_helpers": "tests.support.site_helpers",
    "integration": "tests.integration",
    "integration.site_helpers": "tests.support.site_helpers",
    "service_helpers": "tests.support.service_helpers",
    "integration.service_helpers": "tests.support.service_helpers",
    "lumi_layout": "tests.support.lumi_layout",
    "workflow_model": "tests.support.workflow_model",
    "cloud_emulator": "tests.cloud_emulator",
    "cloud_emulator.testing": "tests.cloud_emulator.testing",
    "github_emulator": "tests.github_emulator",
    "github_emulator.testing": "tests.github_emulator.testing",
}


class _AliasLoader(importlib.abc.Loader):
    """Hands out the module under its new name: one module object, whichever name imported it."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        return None  # already executed under its own name


class _MergeAliases(importlib.abc.MetaPathFinder):
    """Last on sys.meta_path, so only a name nothing else finds (an old top-level helper) gets here."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name not in MERGE_ALIASES:
            return None
        return importlib.util.spec_from_loader(name, _AliasLoader(MERGE_ALIASES[name]))


if not any(isinstance(finder, _MergeAliases) for finder in sys.meta_path):
    sys.meta_path.append(_MergeAliases())
