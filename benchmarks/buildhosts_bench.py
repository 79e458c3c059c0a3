"""Builds over 1, 2 and 3 build hosts: makespan, speed-up and the schedule's lower bound; and a
projection of a LUMI-sized run (32 images, 10 hosts) from recorded step durations.

The measured part builds a 13-image DAG (`base` <- 12 `app`s: a common base and the images built
on it, the shape of most definitions trees) on real Docker engines (this machine's main engine and
the extra ones `inv local.up` starts), two builds per host, sharing the local registry as build
registry and cache. Each build waits (`RUN sleep`) far more than it computes, so the machine's two
cores are not what limits the run: the hosts' slots are. Twelve apps fill 2, 4 and 6 slots in
whole waves, so the comparison is about placement, not about rounding. Every configuration builds
under its own token (no cache hit from an earlier one); an app placed on another host than `base`
gets it from the build registry by digest.

Targets (issue 23): with n hosts, speed-up against one host >= 0.8 n (as a bound on the makespan:
T(n) <= T(1) / (0.8 n)), and T(n) within 1.15 x of the lower bound of that same run,
`max(critical path, work / slots)` from its measured build durations.

The projection replays a LUMI-sized DAG (2 OS bases, 4 ROCm stacks, 6 frameworks, 20
applications) through the pool's policy (free slot first, the parents' host preferred, a pull by
digest when placed elsewhere) with build durations taken from a recorded run (the bundled
examples' `inv build-all`, benchmarks/data/buildhosts-recorded.json), scaled to the tens of
minutes of ROCm builds.
"""

from __future__ import annotations

import heapq
import io
import json
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import Measurement
from benchmarks.schedule import lower_bound
from ci import api
from ci.buildhosts import BuildPool, BuildPoolSettings, DockerBuildHost, local_engines
from ci.config.build_hosts import BuildHostSettings
from ci.config.settings import load_settings
from ci.docker.engine import DockerEngine
from ci.local import services as local

BASE_IMAGE = "containers-ci/debian:bookworm"
MAIN = "unix:///run/docker.sock"
SLOTS = 2
WAIT = {"base": 0, "app": 30}  # seconds each build sleeps
APPS = 12
RECORDED = Path(__file__).resolve().parent / "data" / "buildhosts-recorded.json"


def _addresses() -> list[str]:
    return [MAIN, *(engine.address for engine in local_engines.engines())]


def _write_dag(root: Path, token: str) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {"base": []}
    files = {"base": f"FROM {BASE_IMAGE}\nRUN echo {token} > /base && sleep {WAIT['base']}\n"}
    for index in range(1, APPS + 1):
        files[f"app{index:02d}"] = f"FROM base\nRUN echo {token}-{index} > /app && sleep {WAIT['app']}\n"
        parents[f"app{index:02d}"] = ["base"]
    for name, text in files.items():
        folder = root / "amd64" / name
        folder.mkdir(parents=True)
        (folder / "Dockerfile").write_text(text, encoding="utf-8")
    return parents


def _seed(addresses: Sequence[str]) -> None:
    """The base image on every host, through the registry by digest (from the main engine)."""
    hosts = [DockerBuildHost(BuildHostSettings(name=f"h{i}", address=a),
                             DockerEngine(client_call=["/usr/bin/docker"], host=a)) for i, a in enumerate(addresses)]
    pool = BuildPool(hosts, BuildPoolSettings(registry=local.REGISTRY_ADDRESS, repository="containers-ci/seed"))
    for host in hosts:
        pool.ensure(host, BASE_IMAGE, io.StringIO())


def _run(addresses: Sequence[str], scratch: Path) -> tuple[float, dict[str, dict[str, float]], dict[str, list[str]],
                                                            dict[str, str]]:
    token = uuid.uuid4().hex[:10]
    root = scratch / token
    parents = _write_dag(root / "definitions", token)
    config = {"profile": "bench", "profiles": {"bench": {}}, "definitions": str(root / "definitions"),
              "arch": ["amd64"], "registry_prefix": f"bhbench{token}/", "state_dir": str(root / "state"),
              "docker": {"client": "/usr/bin/docker", "buildkit": True, "network": "host"},
              "build_hosts": [{"name": f"h{i + 1}", "address": a, "builds": SLOTS} for i, a in enumerate(addresses)],
              "build_pool": {"registry": local.REGISTRY_ADDRESS, "repository": f"bhbench/{token}"}}
    settings = load_settings(config, root, profile="bench")
    report = api.build(settings)
    try:
        if not report.ok:
            raise RuntimeError(f"the benchmark build failed: {[(i.name, i.detail) for i in report.images]}")
        events = [json.loads(line) for line in (root / "state" / "runs" / report.run_id / "events.jsonl")
                  .read_text().splitlines()]
        builds = [e for e in events if e.get("step") == "build"]
        started = min(e["time"] for e in builds if e["state"] == "running")
        ended = max(e["time"] for e in builds if e["state"] == "done")
        durations = {e["image"].split("/", 1)[1]: {"build": float(e["duration"])} for e in builds
                     if e["state"] == "done"}
        hosts = {e["image"].split("/", 1)[1]: e["data"]["host"] for e in builds if e["state"] == "done"}
        return ended - started, durations, parents, hosts
    finally:
        for address in addresses:
            engine = DockerEngine(client_call=["/usr/bin/docker"], host=address)
            ours = [tag for image in engine.client.image.list() for tag in image.repo_tags or () if token in tag]
            if ours:
                engine.client.image.remove(ours)  # our names only: the shared base stays


def measured() -> list[Measurement]:
    addresses = _addresses()
    if not (local.registry_ready() and all(engine.ready() for engine in local_engines.engines())):
        raise RuntimeError("the build-hosts benchmark needs the registry and the extra engines: `inv local.up`")
    _seed(addresses)
    out: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bh-bench-") as scratch:
        results = {n: _run(addresses[:n], Path(scratch)) for n in (1, 2, 3)}
    single = results[1][0]
    for n, (makespan, durations, parents, hosts) in results.items():
        bound = lower_bound(durations, parents, {"build": SLOTS * n})
        used = len(set(hosts.values()))
        out.append(Measurement(f"buildhosts: makespan, {n} host(s) x {SLOTS} slots", makespan, "s",
                               target=None if n == 1 else single / (0.8 * n),
                               note=f"speed-up {single / makespan:.2f}x, lower bound {bound:.1f}s, "
                                    f"{used} host(s) used, work {sum(d['build'] for d in durations.values()):.0f}s"))
        out.append(Measurement(f"buildhosts: makespan / lower bound, {n} host(s)", makespan / bound, "x",
                               target=1.15))
    return out


# ---- the projection ---------------------------------------------------------------------------------


def lumi_dag() -> dict[str, list[str]]:
    """A LUMI-sized DAG: 2 OS bases, 4 ROCm stacks, 6 frameworks, 20 applications (32 images)."""
    parents: dict[str, list[str]] = {"os-sles": [], "os-ubuntu": []}
    for index in range(4):
        parents[f"rocm-{index}"] = ["os-sles" if index < 2 else "os-ubuntu"]
    for index in range(6):
        parents[f"framework-{index}"] = [f"rocm-{index % 4}"]
    for index in range(20):
        parents[f"app-{index:02d}"] = [f"framework-{index % 6}" if index < 18 else f"rocm-{index % 4}"]
    return parents


def recorded_durations() -> list[float]:
    """Build durations of a recorded run (seconds), longest first."""
    data = json.loads(RECORDED.read_text(encoding="utf-8"))
    return sorted((float(value) for value in data["build_seconds"].values()), reverse=True)


def lumi_durations(parents: Mapping[str, Sequence[str]], recorded: Sequence[float], scale: float) -> dict[str, float]:
    """Each image gets a recorded duration (cycled, deepest images the shortest), times `scale`."""
    def depth(name: str) -> int:
        return 0 if not parents[name] else 1 + max(depth(p) for p in parents[name])

    order = sorted(parents, key=lambda name: (depth(name), name))
    return {name: recorded[index % len(recorded)] * scale for index, name in enumerate(order)}


def simulate(parents: Mapping[str, Sequence[str]], durations: Mapping[str, float], hosts: int, slots: int,
             pull: float) -> tuple[float, int]:
    """The pool's policy replayed: ready images by most descendants; a free slot on the parent's host
    first, else any free host, paying `pull` seconds to fetch the parent by digest. Returns
    (makespan, pulls)."""
    children: dict[str, list[str]] = {name: [] for name in parents}
    for name, ps in parents.items():
        for p in ps:
            children[p].append(name)

    def descendants(name: str) -> int:
        return sum(1 + descendants(child) for child in children[name])

    priority = {name: descendants(name) for name in parents}
    free = dict.fromkeys(range(hosts), slots)
    where: dict[str, int] = {}
    done: set[str] = set()
    ready = [name for name, ps in parents.items() if not ps]
    running: list[tuple[float, str, int]] = []
    now, pulls = 0.0, 0
    while ready or running:
        ready.sort(key=lambda name: (-priority[name], name))
        for name in list(ready):
            homes = [where[p] for p in parents[name] if p in where]
            choice = next((h for h in homes if free[h] > 0), None)
            if choice is None:
                choice = max(free, key=lambda h: (free[h], -h)) if any(free.values()) else None
            if choice is None:
                break
            cost = durations[name] + (pull if homes and choice not in homes else 0.0)
            pulls += 1 if homes and choice not in homes else 0
            free[choice] -= 1
            where[name] = choice
            ready.remove(name)
            heapq.heappush(running, (now + cost, name, choice))
        now, name, host = heapq.heappop(running)
        free[host] += 1
        done.add(name)
        ready += [child for child in children[name] if all(p in done for p in parents[child])]
    return now, pulls


def projection() -> list[Measurement]:
    parents = lumi_dag()
    durations = lumi_durations(parents, recorded_durations(), scale=10.0)
    work = sum(durations.values())
    out = []
    for hosts, pull in ((1, 120.0), (2, 120.0), (4, 120.0), (10, 120.0), (10, 0.0)):
        makespan, pulls = simulate(parents, durations, hosts, SLOTS, pull)
        bound = lower_bound({n: {"build": d} for n, d in durations.items()}, parents, {"build": SLOTS * hosts})
        out.append(Measurement(f"buildhosts: LUMI-sized projection, {hosts} host(s), pull {pull:.0f}s",
                               makespan / 60, "min",
                               note=f"32 images, {SLOTS} slots per host, lower bound {bound / 60:.1f} min, "
                                    f"{pulls} parent pulls, total work {work / 3600:.1f} h"))
    return out


def run() -> list[Measurement]:
    out = projection()
    if os.environ.get("BUILDHOSTS_BENCH_PROJECTION_ONLY") != "1":
        out = measured() + out
    return out


def record(report_json: Path) -> Path:
    """Keep a run's build durations (a build-all `--json` report) as the projection's input."""
    report: dict[str, Any] = json.loads(report_json.read_text(encoding="utf-8"))
    seconds = {image["name"]: next(step["duration"] for step in image["steps"] if step["name"] == "build")
               for image in report["images"] if any(step["name"] == "build" for step in image["steps"])}
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps({"source": "inv build-all --json (bundled examples, two build hosts)",
                                    "run_id": report["run_id"], "build_seconds": seconds}, indent=2) + "\n",
                        encoding="utf-8")
    return RECORDED
