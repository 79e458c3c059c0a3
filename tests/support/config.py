"""The project's own settings as tests start from them: the `ci:` section of invoke.yaml.

Read once per call and handed out as a fresh, deep copy, so a test that changes its copy (merging
a section over it, deleting a key) never changes what the next test reads.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import yaml

from tests.support.paths import INVOKE_YAML


@functools.cache
def _invoke_yaml() -> dict[str, Any]:
    with INVOKE_YAML.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    if not isinstance(document, dict) or not isinstance(document.get("ci"), dict):
        raise AssertionError(f"{INVOKE_YAML} has no `ci:` mapping; the tests start from the project's settings")
    return document


def project_config() -> dict[str, Any]:
    """The `ci:` section of the project's invoke.yaml (a copy the caller may change)."""
    return copy.deepcopy(dict(_invoke_yaml()["ci"]))
