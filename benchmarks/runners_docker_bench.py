"""Queued -> runner ready, with and without a private rootless Docker daemon in each runner job.

Real Slurm, the stand-in runner, the emulated GitHub; the allocator submits as the unprivileged job
user (`ci-runner`, from `inv local.up`) over the loopback sshd, as the tests do. 20 jobs arrive one
every `GAP` seconds (the local node has 2 CPUs: arrivals far enough apart that a job rarely waits
for a free CPU, so the figure is the runner's own start-up). "Ready" is when the runner connects to
GitHub (the emulator records it); runners are not bound to jobs, so the k-th job queued is paired
with the k-th runner that connected. Target: the daemon adds <= 5 s at p95.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Measurement
from ci.local import services as local

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests"))

from tests.github_emulator import TOKEN, Emulator  # noqa: E402 - the emulator lives with the tests
from tests.github_emulator.jobuser import job_user_settings, job_user_site  # noqa: E402
from tests.github_emulator.testing import Running, cancel_all, unique_prefix  # noqa: E402

JOBS = 20
GAP = 5.0  # seconds between arrivals
LABELS = ["self-hosted", "slurm", "bench"]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ready_latencies(docker: str | None) -> tuple[list[float], list[float]]:
    """(queued -> ready per job, the daemon's own start-up per job from the job logs)."""
    os.environ["CI_GITHUB_TOKEN"] = TOKEN
    prefix = unique_prefix()
    target = {"name": "bench", "labels": LABELS, "max": JOBS, "idle_timeout": 5, "docker": docker,
              "slurm": {"cpus": 1, "mem": "500M", "time": "00:10:00"}}
    with tempfile.TemporaryDirectory(prefix="runners-docker-bench-") as scratch, Emulator() as emulator, \
            job_user_site(prefix, max_wait=60) as site:
        settings = job_user_settings(emulator.url, emulator.github.repository, Path(scratch), site, [target],
                                     poll_interval=1.0)
        running = Running(settings).start()
        try:
            for _ in range(JOBS):
                emulator.add_run([{"labels": LABELS}])
                time.sleep(GAP)
            deadline = time.monotonic() + 300
            while emulator.summary()["success"] < JOBS and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            running.stop()
            cancel_all(prefix)
        queued = sorted(job.created for job in emulator.github.jobs.values())
        ready = sorted(emulator.github.connected.values())
        if emulator.summary()["success"] < JOBS or len(ready) < JOBS:
            raise RuntimeError(f"only {emulator.summary()['success']} of {JOBS} jobs done, {len(ready)} runners ready")
        daemon = [float(match) for text in site.logs().values()
                  for match in re.findall(r"daemon ready on \S+ after ([0-9.]+)s", text)]
        return [max(0.0, r - q) for q, r in zip(queued, ready, strict=False)], daemon


def run() -> list[Measurement]:
    name = f"runners: queued->ready p95, {JOBS} jobs"
    if not (local.slurm_ready() and local.sshd_ready() and local.rootless_ready()):
        return [Measurement(f"{name}, rootless Docker", float("nan"), "s",
                            note="needs Slurm, the loopback sshd and the job user: `inv local.up`")]
    plain, _ = _ready_latencies(None)
    rootless, daemon = _ready_latencies("rootless")
    added = _quantile(rootless, 0.95) - _quantile(plain, 0.95)
    return [
        Measurement(f"{name}, no daemon", _quantile(plain, 0.95), "s",
                    note=f"p50 {_quantile(plain, 0.5):.2f} s, max {max(plain):.2f} s"),
        Measurement(f"{name}, rootless Docker", _quantile(rootless, 0.95), "s",
                    note=f"p50 {_quantile(rootless, 0.5):.2f} s, max {max(rootless):.2f} s; the daemon answered "
                         f"after {statistics.median(daemon):.1f} s (median of {len(daemon)})"),
        Measurement("runners: what the per-job daemon adds at p95", added, "s", 5.0,
                    note=f"p50 {_quantile(rootless, 0.5) - _quantile(plain, 0.5):+.2f} s"),
    ]
