"""Shared reporting for benchmarks: each result is a measured value against its target."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    target: float | None = None  # an upper bound; None means "recorded, no target"
    note: str = ""

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.value <= self.target

    def line(self) -> str:
        verdict = "met" if self.met else "MISSED"
        target = "" if self.target is None else f" (target <= {self.target:g} {self.unit}: {verdict})"
        note = f"  [{self.note}]" if self.note else ""
        return f"{self.name:<48} {self.value:10.3f} {self.unit}{target}{note}"


def save(benchmark: str, measurements: list[Measurement]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{benchmark}.json"
    path.write_text(json.dumps({
        "benchmark": benchmark, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "measurements": [{**asdict(m), "met": m.met} for m in measurements],
    }, indent=2))
    return path
