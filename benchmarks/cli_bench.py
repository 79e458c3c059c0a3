"""How fast the edge answers: `inv --list`, and `inv build-all` when there is nothing to do.

Both are what a person types most; both used to pay for importing the whole library (about 1 s)
before doing anything. Each is run as a new process (Python start-up and imports counted) several
times and the median is reported. The no-op build-all first runs one real build-all of the bundled
examples into a scratch site (not timed), so the timed runs find every image tested.
Targets (issue 18): `inv --list` <= 0.3 s, a no-op `inv build-all` <= 1 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Measurement

PROJECT = Path(__file__).resolve().parent.parent
INV = Path(sys.executable).parent / "inv"


def _median_seconds(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, cwd=PROJECT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(runs: int = 7) -> list[Measurement]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's default: the library's .pyc files are written and reused
    listing = _median_seconds([str(INV), "--list"], env, runs)
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as scratch:
        env["XDG_STATE_HOME"] = str(Path(scratch) / "state")
        build_all = [str(INV), "build-all", "--site-root", str(Path(scratch) / "site")]
        subprocess.run(build_all, cwd=PROJECT, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        noop = _median_seconds(build_all, env, runs)
    return [
        Measurement("inv --list (median, new process)", listing, "s", target=0.3),
        Measurement("no-op inv build-all on the bundled examples (median)", noop, "s", target=1.0,
                    note="every image already tested"),
    ]
