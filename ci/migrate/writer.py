"""Writing the output tree: deterministic YAML, then the whole tree staged beside the output folder
and swapped in with renames, so a failed run leaves nothing half-written and two runs write the
same bytes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ci.migrate.findings import MigrationError


@dataclass(frozen=True)
class TreeFile:
    """A file of the output tree: its bytes, or the checkout file to copy them from, and its mode."""

    data: bytes | None
    source: Path | None
    executable: bool



class _Dumper(yaml.SafeDumper):
    """Block style, no aliases, keys in the order we give: the same text on every run."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def yaml_text(comment: str, data: dict[str, Any]) -> bytes:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=10_000)
    header = f"# {comment}.\n# Written by `inv migrate.lumi`; see docs/frontends/migrate-lumi.md.\n"
    return (header + body).encode("utf-8")


def write_tree(out: Path, tree: dict[str, TreeFile], accept: Callable[[Path], str]) -> bool:
    """Write the tree beside `out`, then swap it in with renames: never a half-written `out`.

    `accept(staged)` looks at the staged tree first: "write" hands it over, "restage" writes it
    again (entries were removed from `tree`), "abandon" leaves `out` as it was. Returns whether
    `out` now holds the tree.
    """
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{out.name}.migrate-{os.getpid()}"
    old = parent / f".{out.name}.old-{os.getpid()}"
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        _stage(staging, tree)
        verdict = accept(staging)
        if verdict == "abandon":
            return False
        if verdict == "restage":
            shutil.rmtree(staging)
            _stage(staging, tree)
        if out.exists():
            out.rename(old)
        staging.rename(out)
        return True
    except OSError as exc:
        raise MigrationError(f"cannot write {out} ({exc.strerror}); nothing was changed") from None
    finally:
        for leftover in (staging, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _stage(staging: Path, tree: dict[str, TreeFile]) -> None:
    staging.mkdir()
    for rel in sorted(tree):
        copy = tree[rel]
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy.data is not None:
            target.write_bytes(copy.data)
        else:
            assert copy.source is not None
            with copy.source.open("rb") as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
        target.chmod(0o755 if copy.executable else 0o644)
    for folder in sorted({p.parent for p in staging.rglob("*")} | {staging}):
        folder.chmod(0o755)
