"""The runner allocator (ci/runners) against the emulated GitHub API (tests/github_emulator).

1. queued -> sbatch latency over 100 jobs, real Slurm, the stand-in runner in each job, the default
   poll interval (5 s): 20 workflow runs of 5 jobs each arrive at random moments over a minute.
   Runners are not bound to jobs, so latency is measured as GitHub would see it: the k-th job
   queued for a target against the k-th runner submitted for it. Target: p95 <= poll interval + 1 s.
   The same with workflow_job webhooks switched on is recorded too.
2. API calls per idle poll (nothing queued or running), after the first poll: target <= 2, both 304.
3. Memory over a 10,000-job soak: the allocator polls the emulator (in its own process) every 20 ms;
   each submitted runner is "run" at once by an in-process stand-in scheduler that does what the
   stand-in runner does (connect, take a job, complete). The resident set is sampled every 1,000
   jobs; target: growth from 2,000 to 10,000 jobs <= 8 MB (flat, no per-job leak).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import Measurement
from ci.local import services as local
from ci.resources import Resources
from ci.runners import control
from ci.runners.state import State
from ci.schedulers import JobSpec, JobState, JobStatus
from tests.github_emulator import TOKEN, Emulator
from tests.github_emulator.testing import (
    Running,
    cancel_all,
    settings_for,
    settings_for_api,
    target,
    unique_prefix,
)
from tests.support.http_emulator import wait_until_listening

PROJECT = Path(__file__).resolve().parent.parent

LABELS = ["self-hosted", "slurm"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------------------------------------
# 1. latency
# ----------------------------------------------------------------------------------------------

def _latency(webhook: bool, jobs: int = 100, per_run: int = 5, spread: float = 60.0) -> list[float]:
    secret = "bench-webhook-secret"
    os.environ["CI_GITHUB_TOKEN"] = TOKEN
    os.environ["CI_GITHUB_WEBHOOK_SECRET"] = secret
    prefix = unique_prefix()
    with tempfile.TemporaryDirectory(prefix="runners-bench-") as scratch, Emulator() as emulator:
        more: dict[str, Any] = {"poll_interval": 5.0, "reconcile_interval": 180}
        if webhook:
            more["webhook"] = {"host": "127.0.0.1", "port": 0, "path": "/webhook"}
        settings = settings_for(emulator, Path(scratch), [target("cpu", LABELS, max=jobs)], prefix=prefix, **more)
        running = Running(settings).start()
        try:
            if webhook:
                emulator.webhook = (running.urls["webhook"], secret.encode())
            rng = random.Random(11)
            moments = sorted(rng.uniform(0, spread) for _ in range(jobs // per_run))
            began = time.time()
            for moment in moments:
                time.sleep(max(0.0, began + moment - time.time()))
                emulator.add_run([{"labels": LABELS} for _ in range(per_run)])
            deadline = time.monotonic() + 300
            while emulator.summary()["success"] < jobs and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            running.stop()
            cancel_all(prefix)
        queued = sorted(job.created for job in emulator.github.jobs.values())
        state = State(Path(scratch) / "state" / "runners", readonly=True)
        submitted = sorted(row.submitted for row in state.all() if row.submitted is not None)
        state.close()
        if emulator.summary()["success"] < jobs or len(submitted) < jobs:
            raise RuntimeError(f"only {emulator.summary()['success']} of {jobs} jobs done, "
                               f"{len(submitted)} runners submitted")
        return [max(0.0, s - q) for q, s in zip(queued, submitted, strict=False)]


# ----------------------------------------------------------------------------------------------
# 2. idle polls
# ----------------------------------------------------------------------------------------------

def _idle_poll_calls(polls: int = 20) -> tuple[float, float]:
    os.environ["CI_GITHUB_TOKEN"] = TOKEN
    with tempfile.TemporaryDirectory(prefix="runners-bench-") as scratch, Emulator() as emulator:
        settings = settings_for(emulator, Path(scratch), [target("cpu", LABELS)], reconcile_interval=3600)
        with control.allocator(settings) as allocator:
            allocator.step()  # the first poll fills the cache (and reconciles)
            client = allocator.github.client
            calls, not_modified = client.calls, client.not_modified
            for _ in range(polls):
                allocator.step()
            return (client.calls - calls) / polls, (client.not_modified - not_modified) / polls


# ----------------------------------------------------------------------------------------------
# 3. soak
# ----------------------------------------------------------------------------------------------

class InstantScheduler:
    """A scheduler whose jobs run at submission: the job script's JIT file is read (and removed) and
    the stand-in runner's protocol is spoken to the emulator: connect, take a job, complete it."""

    name = "instant"

    def __init__(self) -> None:
        self._ended: dict[str, JobStatus] = {}
        self._count = 0
        self._lock = threading.Lock()

    def submit(self, job: JobSpec) -> str:
        match = re.search(r"^jit=(\S+)$", job.script or "", re.MULTILINE)
        assert match is not None
        path = Path(match.group(1).strip("'"))
        encoded = path.read_text()
        path.unlink()
        config = json.loads(__import__("base64").b64decode(encoded))

        def call(action: str, data: dict[str, Any]) -> dict[str, Any]:
            request = urllib.request.Request(f"{config['url']}/_emulator/runner/{action}", method="POST",
                                             data=json.dumps({"secret": config["secret"], **data}).encode())
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
            return json.loads(body) if body else {}

        call("connect", {})
        taken = call("acquire", {}).get("job")
        if taken:
            call("complete", {"job_id": taken["id"]})
        with self._lock:
            self._count += 1
            job_id = f"instant-{self._count}"
            self._ended[job_id] = JobStatus(job_id, JobState.COMPLETED, 0, name=job.name)
        return job_id

    def poll(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        with self._lock:  # reported once: the allocator does not ask about ended runners again
            return {i: self._ended.pop(i, JobStatus(i, JobState.COMPLETED, 0)) for i in ids}

    def cancel(self, ids: Sequence[str], reason: str = "") -> None:
        return None

    def find(self, prefix: str) -> list[JobStatus]:
        return []

    def directives(self, job: JobSpec) -> list[str]:
        return []

    def task_launch(self, resources: Resources) -> list[str]:
        return []


def _soak(total: int = 10_000, batch: int = 400, per_run: int = 10) -> tuple[list[tuple[int, float]], float]:
    os.environ["CI_GITHUB_TOKEN"] = TOKEN
    # 10,000 jobs cost ~1.1 calls each (a JIT config, and the listings that changed): above GitHub's
    # 5,000 an hour for a token, so the emulated limit is raised (the poll's own cost is measured above).
    server = subprocess.Popen([sys.executable, "-m", "tests.github_emulator", "--port", "0", "--rate-limit",
                               "1000000"], cwd=PROJECT, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    info = json.loads(server.stdout.readline())
    url = info["api_url"]
    host, _, port = url.removeprefix("http://").rpartition(":")
    wait_until_listening(host, int(port), timeout=30)

    def control_call(path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(f"{url}{path}", method="POST" if data is not None else "GET",
                                         data=json.dumps(data).encode() if data is not None else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))

    samples: list[tuple[int, float]] = []
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="runners-soak-") as scratch:
            settings = settings_for_api(url, info["repository"], Path(scratch), [target("cpu", LABELS, max=batch)],
                                        poll_interval=0.02, reconcile_interval=30, keep_finished=60)
            with control.allocator(settings) as allocator:
                allocator.scheduler = InstantScheduler()
                thread = threading.Thread(target=allocator.run, daemon=True)
                thread.start()
                added = 0
                next_sample = 1000
                while True:
                    summary = control_call("/_emulator/summary")
                    done = summary["success"]
                    if done >= next_sample:
                        samples.append((done, _rss_mb()))
                        next_sample += 1000
                    if done >= total:
                        break
                    if added < total and summary["queued"] + summary["in_progress"] < batch // 2:
                        for _ in range(batch // per_run):
                            control_call("/_emulator/runs", {"jobs": [{"labels": LABELS}] * per_run})
                        added += batch
                    if time.monotonic() - began > 1800:
                        raise RuntimeError(f"soak too slow: {done} jobs in 30 min")
                    time.sleep(0.5)
                allocator.stop()
                thread.join(30)
                served_twice = summary["served_twice"]
                if served_twice:
                    raise RuntimeError(f"jobs served twice: {served_twice[:5]}")
    finally:
        server.terminate()
        server.wait(10)
    return samples, time.monotonic() - began


def run() -> list[Measurement]:
    measurements: list[Measurement] = []
    if local.slurm_ready():
        latencies = _latency(webhook=False)
        measurements.append(Measurement("runners: queued->sbatch p95 (100 jobs, 5 s poll)",
                                        _quantile(latencies, 0.95), "s", 6.0,
                                        f"p50 {_quantile(latencies, 0.5):.2f} s, max {max(latencies):.2f} s"))
        hooked = _latency(webhook=True)
        measurements.append(Measurement("runners: queued->sbatch p95 with webhooks", _quantile(hooked, 0.95), "s",
                                        note=f"p50 {_quantile(hooked, 0.5):.2f} s, max {max(hooked):.2f} s"))
    else:
        measurements.append(Measurement("runners: queued->sbatch p95 (100 jobs, 5 s poll)", float("nan"), "s",
                                        note="Slurm is not running here: `inv local.up`"))
    calls, not_modified = _idle_poll_calls()
    measurements.append(Measurement("runners: API calls per idle poll", calls, "calls", 2,
                                    f"{not_modified:.1f} of them answered 304 (no rate limit)"))
    samples, seconds = _soak()
    base = next(rss for done, rss in samples if done >= 2000)
    growth = samples[-1][1] - base
    measurements.append(Measurement("runners: RSS growth 2,000 -> 10,000 jobs (soak)", growth, "MB", 8,
                                    f"RSS {', '.join(f'{d // 1000}k:{r:.0f}' for d, r in samples)} MB; "
                                    f"{samples[-1][0]} jobs in {seconds:.0f}s"))
    return measurements
