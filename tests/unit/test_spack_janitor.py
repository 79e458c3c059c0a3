"""The build cache janitor over the v2 and v3 directory layouts: keep, age, cascade, dry run, index."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ci.buildcache.caches import DirectoryV2, DirectoryV3, open_store
from ci.buildcache.janitor import DAY, plan, referenced_hashes, run
from ci.local.spack_standin import spack_standin

NOW = time.time()
ARCH = {"platform": "linux", "platform_os": "debian12", "target": "x86_64_v3"}


def h(name: str) -> str:
    """A Spack-shaped DAG hash (32 base32 characters) for a test package."""
    return spack_standin.dag_hash(name)


def node(name: str, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "arch": ARCH, "hash": h(name),
            "dependencies": [{"name": d, "hash": h(d), "parameters": {"deptypes": ["build", "link"]}} for d in deps]}


def lock_of(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"roots": [{"hash": nodes[0]["hash"], "spec": nodes[0]["name"]}],
            "concrete_specs": {n["hash"]: n for n in nodes}}


def v3_cache(root: Path, nodes: list[dict[str, Any]], ages: dict[str, float]) -> DirectoryV3:
    cache = spack_standin.DirectoryCache(root)
    lock = lock_of(*nodes)
    for entry in nodes:
        cache.push(lock, entry, gzip.compress(entry["name"].encode() * 100), None, NOW - ages[entry["name"]] * DAY)
    cache.update_index()
    return DirectoryV3(root)


def v2_cache(root: Path, nodes: list[dict[str, Any]], ages: dict[str, float]) -> DirectoryV2:
    folder = root / "build_cache"
    for entry in nodes:
        prefix = f"linux-debian12-x86_64_v3-gcc-12.2.0-{entry['name']}-1.0-{entry['hash']}"
        tarball = folder / "linux-debian12-x86_64_v3" / "gcc-12.2.0" / f"{entry['name']}-1.0" / f"{prefix}.spack"
        tarball.parent.mkdir(parents=True, exist_ok=True)
        tarball.write_bytes(b"x" * 1000)
        spec = folder / f"{prefix}.spec.json"
        spec.write_text(json.dumps({"spec": {"_meta": {"version": 4}, "nodes": [entry]},
                                    "buildcache_layout_version": 2}))
        when = NOW - ages[entry["name"]] * DAY
        os.utime(spec, (when, when))
    return DirectoryV2(root)


NODES = [node("runtime"), node("zlib", ("runtime",)), node("hdf5", ("zlib", "runtime")), node("old", ("runtime",)),
         node("fresh", ("runtime",))]
AGES = {"runtime": 90, "zlib": 90, "hdf5": 90, "old": 90, "fresh": 1}


@pytest.mark.parametrize("layout", ["v2", "v3"])
def test_keep_referenced_and_young_delete_the_rest(tmp_path: Path, layout: str) -> None:
    store = (v2_cache if layout == "v2" else v3_cache)(tmp_path, NODES, AGES)
    lock = tmp_path / "spack.lock"
    lock.write_text(json.dumps(lock_of(node("hdf5", ("zlib", "runtime")), node("zlib", ("runtime",)),
                                       node("runtime"))))
    keep, problems = referenced_hashes([lock])
    assert problems == [] and keep == {h("hdf5"), h("zlib"), h("runtime")}
    dry = plan(store, keep_hashes=keep, max_age_days=30, now=NOW)
    assert [(r.entry.name, r.reason) for r in dry.remove] == [("old", "unreferenced, 90 days old")]
    assert dry.bytes > 0 and not dry.deleted
    assert run(store, dry, yes=False).deleted is False
    assert {e.name for e in store.entries()} == {"runtime", "zlib", "hdf5", "old", "fresh"}  # a dry run deletes nothing
    real = run(store, plan(store, keep_hashes=keep, max_age_days=30, now=NOW), yes=True)
    assert real.deleted and [r.entry.hash for r in real.remove] == [r.entry.hash for r in dry.remove]
    assert real.bytes == dry.bytes
    assert {e.name for e in store.entries()} == {"runtime", "zlib", "hdf5", "fresh"}
    assert plan(store, keep_hashes=keep, max_age_days=30, now=NOW).remove == []  # nothing left to do
    index = _index(tmp_path, layout)
    assert set(index["database"]["installs"]) == {h("runtime"), h("zlib"), h("hdf5"), h("fresh")}


def _index(root: Path, layout: str) -> dict[str, Any]:
    if layout == "v2":
        data = (root / "build_cache" / "index.json").read_bytes()
        assert (root / "build_cache" / "index.json.hash").read_text() == hashlib.sha256(data).hexdigest()
        return json.loads(data)
    manifest = json.loads((root / "v3" / "manifests" / "index" / "index.manifest.json").read_text())
    checksum = manifest["data"][-1]["checksum"]
    return json.loads((root / "blobs" / "sha256" / checksum[:2] / checksum).read_bytes())


def test_v3_blobs_go_with_their_entry_and_shared_ones_stay(tmp_path: Path) -> None:
    store = v3_cache(tmp_path, NODES, AGES)
    before = {p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()}
    result = run(store, plan(store, keep_hashes=set(), max_age_days=30, now=NOW), yes=True)
    assert {r.entry.name for r in result.remove} == {"runtime", "zlib", "hdf5", "old", "fresh"}
    after = {p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()}
    assert set(result.blobs) <= before and not set(result.blobs) & after
    assert list((tmp_path / "v3" / "manifests" / "spec").rglob("*.json")) == []


def test_the_cascade_reaches_dependents_even_young_ones(tmp_path: Path) -> None:
    store = v3_cache(tmp_path, NODES, {**AGES, "hdf5": 1, "zlib": 90})
    result = plan(store, keep_hashes=set(), max_age_days=30, now=NOW)
    reasons = {r.entry.name: r.reason for r in result.remove}
    assert reasons["hdf5"].startswith("depends on zlib@1.0/")  # young, but its dependency goes
    assert reasons["fresh"].startswith("depends on runtime@1.0/")


def test_a_dependency_cycle_terminates(tmp_path: Path) -> None:
    """spackitor loops forever once it deleted anything; a cycle is the worst case of that loop."""
    cycle = [node("a", ("b",)), node("b", ("c",)), node("c", ("a",)), node("d", ("a",))]
    store = v3_cache(tmp_path, cycle, {"a": 90, "b": 1, "c": 1, "d": 1})
    result = run(store, plan(store, keep_hashes={h("d")}, max_age_days=30, now=NOW), yes=True)
    assert {r.entry.name for r in result.remove} == {"a", "b", "c", "d"}
    assert any("referenced by a current spack.lock" in w for w in result.warnings)
    assert store.entries() == []


def test_an_entry_whose_dependency_is_missing_goes(tmp_path: Path) -> None:
    store = v3_cache(tmp_path, [node("lonely", ("ghost",))], {"lonely": 1})
    result = plan(store, keep_hashes=set(), max_age_days=30, now=NOW)
    assert [r.reason for r in result.remove] == [f"its dependency {h('ghost')[:7]} is not in the cache"]


def test_unreadable_locks_and_caches_are_clear_messages(tmp_path: Path) -> None:
    bad = tmp_path / "spack.lock"
    bad.write_text("{not json")
    _, problems = referenced_hashes([bad])
    assert problems and "protected by age only" in problems[0]
    with pytest.raises(Exception, match="neither a v3/ nor a build_cache/"):
        open_store(str(tmp_path))
    (tmp_path / "v3" / "manifests" / "spec" / "x").mkdir(parents=True)
    (tmp_path / "v3" / "manifests" / "spec" / "x" / "x-1-abc.spec.manifest.json").write_text("garbage")
    with pytest.raises(Exception, match="is not a build cache manifest"):
        open_store(str(tmp_path)).entries()
