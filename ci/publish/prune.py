"""`inv publish.prune TARGET --keep N`: keep the newest N versions of each image, drop the rest.

A dry run unless told otherwise (as the Spack build-cache janitor): it lists what would go. When
applied, the catalog stops listing the dropped entries first (signed, written as always), and only
then are their files deleted, so no reader ever finds a catalog entry whose file is gone.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from ci.errors import CIError
from ci.publish.base import Publisher
from ci.publish.catalog import Entry
from ci.publish.signing import Signer


@dataclass
class Pruning:
    target: str
    keep: int
    dropped: list[Entry] = field(default_factory=list)
    kept: list[Entry] = field(default_factory=list)
    applied: bool = False

    def lines(self) -> list[str]:
        verb = "removed" if self.applied else "would remove"
        lines = [f"{verb} {e.name} {e.version} ({e.arch}, {e.digest12}, published {e.published}): {e.file}"
                 for e in self.dropped]
        if not self.dropped:
            lines.append(f"{self.target}: nothing to prune (at most {self.keep} version(s) per image)")
        elif not self.applied:
            lines.append("dry run: pass --yes to remove them")
        return lines


def choose(entries: list[Entry], keep: int) -> tuple[list[Entry], list[Entry]]:
    """(kept, dropped): per image and architecture, the entries of its newest `keep` versions stay.

    A version's age is its newest publication; several digests of one kept version all stay. The
    catalog's times are to the second, so versions published within one second (one run publishing
    several) are ordered by their version numbers (`1.10` after `1.9`), not by chance.
    """
    if keep < 1:
        raise CIError("--keep must be at least 1 (pruning every version is deleting the target)")
    groups: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[(entry.name, entry.arch)].append(entry)
    kept: list[Entry] = []
    dropped: list[Entry] = []
    for group in groups.values():
        newest: dict[str, str] = {}
        for entry in group:
            newest[entry.version] = max(newest.get(entry.version, ""), entry.published)
        versions = sorted(newest, key=lambda version: (newest[version], _natural(version)), reverse=True)[:keep]
        for entry in group:
            (kept if entry.version in versions else dropped).append(entry)
    return kept, dropped


def _natural(version: str) -> tuple[tuple[int, int | str], ...]:
    """`1.10` -> ((0, 1), (1, "."), (0, 10)): numbers compare as numbers, text as text, never with each other."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|\D+", version))


def prune(publisher: Publisher, keep: int, *, apply: bool, signer: Signer | None) -> Pruning:
    catalog = publisher.read_catalog()
    kept, dropped = choose(list(catalog.containers), keep)
    result = Pruning(publisher.name, keep, dropped, kept)
    if apply and dropped:
        publisher.write_catalog(catalog.without(dropped), signer)
        for entry in dropped:
            publisher.remove(entry)
        result.applied = True
    return result
