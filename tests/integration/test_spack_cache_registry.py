"""The janitor on an OCI build cache in the real local registry: list, keep, cascade, delete, index."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from ci.buildcache.caches import INDEX_TAG, OciRegistry
from ci.buildcache.janitor import DAY, plan, run
from ci.local import services as local
from ci.local.spack_standin import spack_standin
from tests.support.services import require_registry

pytestmark = pytest.mark.registry
ARCH = {"platform": "linux", "platform_os": "debian12", "target": "x86_64_v3"}


def node(name: str, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "arch": ARCH, "hash": spack_standin.dag_hash(name),
            "dependencies": [{"name": d, "hash": spack_standin.dag_hash(d), "parameters": {"deptypes": ["link"]}}
                             for d in deps]}


def test_janitor_on_an_oci_cache(tmp_path: Path) -> None:
    require_registry()
    url = f"oci+http://{local.REGISTRY_ADDRESS}/spack-janitor-{uuid.uuid4().hex[:8]}"
    now = time.time()
    nodes = [node("runtime"), node("keep", ("runtime",)), node("old", ("runtime",)), node("child", ("old",))]
    lock = {"roots": [], "concrete_specs": {n["hash"]: n for n in nodes}}
    writer = spack_standin.OciCache(url)
    ages = {"runtime": 60, "keep": 60, "old": 60, "child": 1}
    for entry in nodes:
        prefix = tmp_path / entry["name"]
        (prefix / "bin").mkdir(parents=True)
        (prefix / "bin" / entry["name"]).write_text(entry["name"] * 50)
        writer.push(lock, entry, spack_standin.tar_prefix(prefix), None, now - ages[entry["name"]] * DAY)
    writer.update_index()
    store = OciRegistry(url)
    assert {e.name for e in store.entries()} == {"runtime", "keep", "old", "child"}
    keep = {spack_standin.dag_hash("keep"), spack_standin.dag_hash("runtime")}
    dry = plan(store, keep_hashes=keep, max_age_days=30, now=now)
    assert {r.entry.name: r.reason for r in dry.remove} == {
        "old": "unreferenced, 60 days old",
        "child": f"depends on old@1.0/{spack_standin.dag_hash('old')[:7]}, which goes"}
    assert {e.name for e in store.entries()} == {"runtime", "keep", "old", "child"}
    real = run(store, plan(store, keep_hashes=keep, max_age_days=30, now=now), yes=True)
    assert [r.entry.hash for r in real.remove] == [r.entry.hash for r in dry.remove] and real.bytes == dry.bytes
    assert {e.name for e in store.entries()} == {"runtime", "keep"}
    manifest = httpx.get(f"{store.base}/manifests/{INDEX_TAG}",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    index = json.loads(httpx.get(f"{store.base}/blobs/{manifest['layers'][0]['digest']}").content)
    assert set(index["database"]["installs"]) == keep
    assert plan(store, keep_hashes=keep, max_age_days=30, now=now).remove == []
