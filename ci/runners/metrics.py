"""The allocator's numbers in Prometheus' text exposition format (served on a loopback port)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping

QUANTILES = (0.5, 0.9, 0.95, 0.99)


def _labels(values: Mapping[str, str]) -> str:
    if not values:
        return ""
    escaped = (f'{key}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for key, value in sorted(values.items()))
    return "{" + ",".join(escaped) + "}"


class Metrics:
    """Counters, gauges and one latency summary; `render()` is what /metrics answers."""

    def __init__(self, window: int = 1000):
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._latencies: deque[float] = deque(maxlen=window)
        self._latency_sum = 0.0
        self._latency_count = 0

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def set_counter(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._counters[(name, tuple(sorted(labels.items())))] = value

    def gauge(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._gauges[(name, tuple(sorted(labels.items())))] = value

    def clear_gauge(self, name: str) -> None:
        with self._lock:
            for key in [key for key in self._gauges if key[0] == name]:
                del self._gauges[key]

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)
            self._latency_sum += seconds
            self._latency_count += 1

    def latency_quantiles(self) -> dict[float, float]:
        with self._lock:
            values = sorted(self._latencies)
        if not values:
            return {}
        return {q: values[min(len(values) - 1, int(q * len(values)))] for q in QUANTILES}

    def render(self) -> str:
        help_text = {
            "ci_runners_github_api_calls_total": "HTTP requests sent to GitHub's API",
            "ci_runners_github_not_modified_total": "conditional GETs GitHub answered 304 (no rate limit cost)",
            "ci_runners_github_errors_total": "GitHub answers that were 5xx, rate limits or lost connections",
            "ci_runners_github_rate_limit_remaining": "X-RateLimit-Remaining of the last answer",
            "ci_runners_runners": "runners of this allocator by target and phase",
            "ci_runners_demand": "queued jobs matched to each target",
            "ci_runners_unservable_jobs": "queued jobs no target can serve",
            "ci_runners_submitted_total": "runner jobs submitted",
            "ci_runners_submit_failures_total": "runner jobs sbatch refused (backed off)",
            "ci_runners_cancelled_total": "runner jobs cancelled by the allocator",
            "ci_runners_polls_total": "polls of GitHub and Slurm",
        }
        lines: list[str] = []
        with self._lock:
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            latency_sum, latency_count = self._latency_sum, self._latency_count
        for kind, table in (("counter", counters), ("gauge", gauges)):
            for name in sorted({key[0] for key in table}):
                lines.append(f"# HELP {name} {help_text.get(name, name)}")
                lines.append(f"# TYPE {name} {kind}")
                for (metric, labels), value in sorted(table.items()):
                    if metric == name:
                        lines.append(f"{name}{_labels(dict(labels))} {value:g}")
        name = "ci_runners_queued_to_submitted_seconds"
        lines.append(f"# HELP {name} from the first poll that saw a job queued to its runner's submission")
        lines.append(f"# TYPE {name} summary")
        for quantile, value in self.latency_quantiles().items():
            lines.append(f'{name}{{quantile="{quantile:g}"}} {value:.6f}')
        lines.append(f"{name}_sum {latency_sum:.6f}")
        lines.append(f"{name}_count {latency_count}")
        return "\n".join(lines) + "\n"
