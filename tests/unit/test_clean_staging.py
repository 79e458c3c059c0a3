"""`inv cleanup` removes old staging folders by the paths find gives, never split at spaces."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ci.hosts import LocalHost
from ci.site.layout import Site


def test_a_run_id_with_a_space_is_removed_whole_and_nothing_beside_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "site"
    staging = root / "staging"
    odd, kept, fresh = staging / "old run", staging / "kept", staging / "fresh"
    for folder in (odd, kept, fresh, tmp_path / "old", tmp_path / "run"):
        folder.mkdir(parents=True)
    old = time.time() - 3 * 86400
    for folder in (odd, kept):
        os.utime(folder, (old, old))
    monkeypatch.chdir(tmp_path)  # a split path would name ./old and ./run here
    removed = Site(LocalHost(), str(root)).clean_staging(1, keep={"kept"})
    assert removed == [str(odd)]
    assert not odd.exists() and kept.exists() and fresh.exists()
    assert (tmp_path / "old").exists() and (tmp_path / "run").exists()
