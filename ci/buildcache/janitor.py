"""The build cache janitor: keep what current environments use and what is young, delete the rest.

Rules (issue 15, and better than spackitor where it is wrong):
- an entry is kept when any current definition's recorded `spack.lock` references its hash, or when
  it is younger than `max_age` days (an entry whose age the layout does not record counts as young);
- every other entry goes, and so does every entry depending (link/run) on an entry that goes,
  transitively: it could never be installed again. The cascade is a work list over a visited set,
  so it ends on every input, cycles included (spackitor looped forever once it deleted anything);
- a dry run (the default) and a real run compute the same plan; the real run deletes exactly the
  listed entries, then rewrites the index from what remains.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci.buildcache.caches import CacheStore, Entry
from ci.errors import CIError

DAY = 86400.0


@dataclass(frozen=True)
class Removal:
    entry: Entry
    reason: str


@dataclass
class JanitorPlan:
    """What a run deletes (and why), what it keeps, and how many bytes go."""

    url: str
    layout: str
    remove: list[Removal] = field(default_factory=list)
    keep: list[Entry] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    deleted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "cache": self.url, "layout": self.layout, "deleted": self.deleted, "bytes": self.bytes,
            "remove": [{"hash": r.entry.hash, "name": r.entry.name, "version": r.entry.version,
                        "bytes": r.entry.size, "reason": r.reason} for r in self.remove],
            "keep": len(self.keep), "warnings": self.warnings,
        }


def referenced_hashes(locks: Iterable[Path]) -> tuple[set[str], list[str]]:
    """Every hash a lockfile mentions (roots and concrete specs, any lockfile version), and read problems."""
    hashes: set[str] = set()
    problems: list[str] = []
    for path in locks:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: cannot be read as a spack.lock ({exc.__class__.__name__}); its entries are "
                            "protected by age only")
            continue
        if not isinstance(data, Mapping):
            problems.append(f"{path}: is not a spack.lock mapping")
            continue
        stack: list[Any] = [data]
        while stack:  # hashes appear as keys of concrete_specs, in roots and in dependency edges
            item = stack.pop()
            if isinstance(item, Mapping):
                for key, value in item.items():
                    if key == "hash" and isinstance(value, str):
                        hashes.add(value)
                    stack.append(value)
                concrete = item.get("concrete_specs")
                if isinstance(concrete, Mapping):
                    hashes |= {str(key) for key in concrete}
            elif isinstance(item, list):
                stack.extend(item)
    return hashes, problems


def plan(store: CacheStore, *, keep_hashes: set[str], max_age_days: float, now: float,
         warnings: Sequence[str] = ()) -> JanitorPlan:
    if max_age_days < 0:
        raise CIError("--max-age must be 0 or more days")
    entries = store.entries()
    by_hash = {entry.hash: entry for entry in entries}
    result = JanitorPlan(url=store.url, layout=store.layout, warnings=list(warnings))
    reasons: dict[str, str] = {}
    limit = now - max_age_days * DAY
    for entry in entries:
        if entry.hash in keep_hashes:
            continue
        if entry.created is None or entry.created >= limit:
            continue
        age = (now - entry.created) / DAY
        reasons[entry.hash] = f"unreferenced, {age:.0f} days old"
    dependents: dict[str, list[str]] = {}
    for entry in entries:
        for dependency in entry.dependencies:
            dependents.setdefault(dependency, []).append(entry.hash)
    for entry in entries:  # a dependency missing from the cache: the entry can never be installed
        missing = [d for d in entry.dependencies if d not in by_hash]
        if missing and entry.hash not in reasons:
            reasons[entry.hash] = f"its dependency {missing[0][:7]} is not in the cache"
    todo = list(reasons)
    while todo:
        gone = todo.pop()
        for child in dependents.get(gone, ()):
            if child not in reasons:
                reasons[child] = f"depends on {by_hash[gone].label if gone in by_hash else gone[:7]}, which goes"
                todo.append(child)
    leaving = [entry for entry in entries if entry.hash in reasons]
    staying = [entry for entry in entries if entry.hash not in reasons]
    kept_blobs = {blob for entry in staying for blob, _ in entry.blobs}
    blob_sizes = {blob: size for entry in leaving for blob, size in entry.blobs}
    freed = sorted(blob for blob in blob_sizes if blob not in kept_blobs)
    result.remove = [Removal(entry, reasons[entry.hash]) for entry in sorted(leaving, key=lambda e: (e.name, e.hash))]
    result.keep = staying
    result.blobs = freed
    result.bytes = sum(blob_sizes[blob] for blob in freed) if any(e.blobs for e in leaving) else \
        sum(entry.size for entry in leaving)
    lost = [entry for entry in leaving if entry.hash in keep_hashes]
    for entry in lost:
        result.warnings.append(f"{entry.label} is referenced by a current spack.lock but cannot stay: "
                               f"{reasons[entry.hash]}")
    return result


def run(store: CacheStore, janitor_plan: JanitorPlan, *, yes: bool) -> JanitorPlan:
    """Delete what the plan lists (only with yes), then rewrite the index from what remains."""
    if not yes or not janitor_plan.remove:
        return janitor_plan
    store.delete([removal.entry for removal in janitor_plan.remove], janitor_plan.blobs)
    store.update_index(janitor_plan.keep)
    janitor_plan.deleted = True
    return janitor_plan


def describe(result: JanitorPlan) -> list[str]:
    """The listing a person reads: one line per entry that goes, then the total."""
    verb = "deleted" if result.deleted else "would delete"
    lines = [f"{verb} {r.entry.label} ({r.entry.size:,} bytes): {r.reason}" for r in result.remove]
    lines += [f"warning: {warning}" for warning in result.warnings]
    total = f"{len(result.remove)} of {len(result.remove) + len(result.keep)} entries, {result.bytes:,} bytes"
    if result.deleted:
        lines.append(f"{result.url} ({result.layout}): {verb} {total}; index updated")
    elif result.remove:
        lines.append(f"{result.url} ({result.layout}): {verb} {total} (dry run; --yes deletes)")
    else:
        lines.append(f"{result.url} ({result.layout}): nothing to delete ({len(result.keep)} entries kept)")
    return lines


def markdown(result: JanitorPlan) -> str:
    """The step summary of a scheduled run: what went (or would go) and why, and the total."""
    verb = "Deleted" if result.deleted else "Would delete"
    lines = [f"## Spack build cache `{result.url}`", ""]
    if result.remove:
        lines += [f"{verb} {len(result.remove)} of {len(result.remove) + len(result.keep)} entries "
                  f"({result.bytes:,} bytes)" + ("" if result.deleted else "; deleting needs "
                                                  "`ci.spack.janitor.delete: true`") + ":", "",
                  "| entry | bytes | reason |", "|---|---:|---|"]
        lines += [f"| `{r.entry.label}` | {r.entry.size:,} | {r.reason} |" for r in result.remove[:500]]
        if len(result.remove) > 500:
            lines.append(f"| ... {len(result.remove) - 500} more | | |")
    else:
        lines.append(f"Nothing to delete ({len(result.keep)} entries kept).")
    lines += [f"- warning: {warning}" for warning in result.warnings]
    return "\n".join(lines) + "\n"
