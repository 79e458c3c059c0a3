"""Kept for branches written before tests/support/: the same names, re-exported from their new homes.

New code imports from `tests.support...` directly; tests/conftest.py also lets an older test's
top-level `from helpers import unmet` resolve to this module (see MERGE_ALIASES there).
"""

from __future__ import annotations

from tests.support.definitions import definition, write_tree
from tests.support.paths import EXAMPLES, PROJECT_DIR
from tests.support.services import BASE_IMAGE, missing, unmet

__all__ = ["BASE_IMAGE", "EXAMPLES", "PROJECT_DIR", "definition", "missing", "unmet", "write_tree"]
