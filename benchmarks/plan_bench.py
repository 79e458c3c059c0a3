"""Plan on 1,000 generated definitions: cold (a new process, nothing cached) and warm.

Cold runs `inv plan --json` in a fresh process, so Python start-up, imports, reading and
hashing every context file and the Docker inventory query are all counted; page caches are
dropped first when the kernel allows it. Warm repeats the plan inside one process.
Targets (issue 2): cold <= 10 s, warm <= 3 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate import generate_definitions
from benchmarks.harness import Measurement
from ci.definitions import load_catalog
from ci.plan import make_plan

PROJECT = Path(__file__).resolve().parent.parent


def _drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run(count: int = 1000) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as scratch:
        root = generate_definitions(Path(scratch) / "defs", count)
        dropped = _drop_page_cache()
        inv = Path(sys.executable).parent / "inv"
        started = time.perf_counter()
        result = subprocess.run([str(inv) if inv.exists() else "inv", "plan", "--definitions", str(root), "--json"],
                                cwd=PROJECT, capture_output=True, text=True, check=False)
        cold = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"inv plan failed: {result.stderr[-2000:]}")
        warm_times = []
        for _ in range(3):
            started = time.perf_counter()
            make_plan(load_catalog(root))
            warm_times.append(time.perf_counter() - started)
    return [
        Measurement(f"plan {count} definitions, cold (new process)", cold, "s", 10.0,
                    "page cache dropped" if dropped else "page cache could not be dropped"),
        Measurement(f"plan {count} definitions, warm (best of 3)", min(warm_times), "s", 3.0),
    ]
