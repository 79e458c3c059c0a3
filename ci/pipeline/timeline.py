"""The run's timeline: a Mermaid gantt chart, one bar per image and step, from the run's events.

GitHub renders ```mermaid blocks in Markdown, the step summary included, so the chart goes where
people look: summary.md of every run (`inv build-all`, the workflow's jobs, `inv site.retest`) and
the workflow's summary job, which merges the events of all its jobs. A step that started and never
ended (a cancelled or killed run) is drawn up to the run's last event and marked active.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_UNSAFE = re.compile(r"[:;#\n\r`]")  # Mermaid reads these as syntax inside a task line


@dataclass(frozen=True)
class Bar:
    image: str
    step: str
    start: float
    end: float
    state: str  # done, failed, skipped, running (never ended)


def bars(events: Iterable[Mapping[str, Any]]) -> list[Bar]:
    """One bar per (image, step) that started, in the order the steps started."""
    starts: dict[tuple[str, str], float] = {}
    ends: dict[tuple[str, str], tuple[float, str]] = {}
    last = 0.0
    for event in events:
        step = str(event.get("step") or "")
        image = str(event.get("image") or "")
        when = float(event.get("time") or 0.0)
        last = max(last, when)
        if not step or not image:
            continue
        key = (image, step)
        state = str(event.get("state") or "")
        if state == "running":
            starts.setdefault(key, when)
        elif state in ("done", "failed", "skipped"):
            duration = float(event.get("duration") or 0.0)
            starts.setdefault(key, when - duration)
            ends[key] = (when, state)
    found = []
    for key, start in sorted(starts.items(), key=lambda item: (item[1], item[0])):
        end, state = ends.get(key, (last, "running"))
        found.append(Bar(key[0], key[1], start, max(end, start), state))
    return found


def _label(text: str) -> str:
    return _UNSAFE.sub(" ", text).strip() or "-"


def gantt(events: Iterable[Mapping[str, Any]], title: str = "") -> str:
    """The Mermaid source of the chart, or "" when no step ran (a run with nothing to do)."""
    found = bars(events)
    if not found:
        return ""
    lines = ["gantt", f"    title {_label(title)}" if title else "", "    dateFormat x", "    axisFormat %H:%M:%S"]
    lines = [line for line in lines if line]
    tags = {"done": "done", "failed": "crit", "skipped": "done", "running": "active"}
    by_image: dict[str, list[Bar]] = {}
    for bar in found:
        by_image.setdefault(bar.image, []).append(bar)
    for image, image_bars in by_image.items():
        lines.append(f"    section {_label(image.split('/', 1)[-1])}")
        for bar in image_bars:
            start, end = int(bar.start * 1000), int(bar.end * 1000)
            lines.append(f"    {_label(bar.step)} :{tags.get(bar.state, 'done')}, {start}, {max(end, start + 1)}")
    return "\n".join(lines)


def markdown(events: Iterable[Mapping[str, Any]], title: str = "Timeline") -> str:
    """A `### Timeline` section with the chart in a mermaid block; "" when no step ran."""
    chart = gantt(events)
    if not chart:
        return ""
    return f"### {title}\n\n```mermaid\n{chart}\n```\n"
