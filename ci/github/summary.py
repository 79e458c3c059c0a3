"""The summary of a whole workflow run (`inv gh.summary`), from the run records of all its jobs.

Each job of the generated workflow uploads its run folder (`events.jsonl`, logs, reports) as an
artifact; the summary job downloads this attempt's artifacts into one folder, one sub-folder per
job, and this module merges their events: a table of every image's steps and the run's timeline
(ci.pipeline.timeline), appended to the step summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ci.errors import CIError
from ci.pipeline import timeline

ICONS = {"done": "✅", "failed": "❌", "skipped": "⏭️", "running": "⏳"}


def events_under(folder: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Every event of every `events.jsonl` below `folder` (of run `run_id` only, when given), by time."""
    if not folder.is_dir():
        raise CIError(f"{folder} is no folder of run records (the summary job downloads them there)")
    found: list[dict[str, Any]] = []
    for path in sorted(folder.rglob("events.jsonl")):
        if run_id and path.parent.name != run_id and not path.parent.name.startswith(f"{run_id}-"):
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed job
            if isinstance(event, dict):
                found.append(event)
    found.sort(key=lambda event: float(event.get("time") or 0.0))
    return found


def markdown(events: Iterable[Mapping[str, Any]], run_id: str) -> str:
    """The table of steps (last state of each image's step) and the timeline, as Markdown."""
    events = list(events)
    steps: dict[str, dict[str, tuple[str, float, str]]] = {}
    for event in events:
        image, step = str(event.get("image") or ""), str(event.get("step") or "")
        if image and step:
            steps.setdefault(image, {})[step] = (str(event.get("state")), float(event.get("duration") or 0.0),
                                                 str(event.get("detail") or ""))
    lines = [f"## Container images, workflow run `{run_id}`", ""]
    if not steps:
        return "\n".join([*lines, "No image step ran in this run (nothing to do, or it stopped before).", ""])
    lines += ["| image | step | result | time | detail |", "|---|---|---|---|---|"]
    for image in sorted(steps):
        for step, (state, duration, detail) in steps[image].items():
            detail = detail.replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| `{image.split('/', 1)[-1]}` | {step} | {ICONS.get(state, '')} {state} | "
                         f"{duration:.1f}s | {detail} |")
    failed = sorted({image.split("/", 1)[-1] for image, by_step in steps.items()
                     for state, _, _ in by_step.values() if state == "failed"})
    lines += ["", f"**{len(steps)} images, {len(failed)} with a failed step**"
              + (f": {', '.join(failed)}" if failed else ""), "", timeline.markdown(events)]
    return "\n".join(lines)
