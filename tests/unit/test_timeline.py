"""The run's timeline (a Mermaid gantt chart from events.jsonl) and the workflow's merged summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ci.errors import CIError
from ci.github.summary import events_under, markdown
from ci.pipeline import timeline


def event(image: str, step: str, state: str, time: float, duration: float = 0.0, detail: str = "") -> dict[str, Any]:
    return {"image": image, "step": step, "state": state, "time": time, "duration": duration, "detail": detail}


EVENTS = [
    event("amd64/base", "build", "running", 100.0),
    event("amd64/base", "build", "done", 110.0, 10.0),
    event("amd64/mpi", "build", "running", 110.5),
    event("amd64/base", "transfer", "running", 110.5),
    event("amd64/base", "transfer", "done", 112.0, 1.5),
    event("amd64/mpi", "build", "failed", 130.0, 19.5, "exit 1: apt-get: not found"),
    event("amd64/mpi", "", "failed", 130.0),  # the image's own end: no bar
    event("amd64/base", "test", "running", 113.0),  # never ended: the run was cancelled
    event("amd64/tools:x", "convert", "done", 140.0, 2.0),  # no running event (a resumed step)
]


def test_one_bar_per_image_and_step_in_start_order() -> None:
    bars = timeline.bars(EVENTS)
    assert [(bar.image, bar.step, bar.state) for bar in bars] == [
        ("amd64/base", "build", "done"), ("amd64/base", "transfer", "done"), ("amd64/mpi", "build", "failed"),
        ("amd64/base", "test", "running"), ("amd64/tools:x", "convert", "done")]
    running = bars[3]
    assert running.end == 140.0  # drawn up to the run's last event


def test_the_gantt_chart_is_mermaid_with_sections_per_image() -> None:
    chart = timeline.gantt(EVENTS, title="run x")
    lines = chart.splitlines()
    assert lines[:4] == ["gantt", "    title run x", "    dateFormat x", "    axisFormat %H:%M:%S"]
    assert "    section base" in lines and "    section mpi" in lines
    assert "    build :done, 100000, 110000" in lines
    assert "    build :crit, 110500, 130000" in lines
    assert "    test :active, 113000, 140000" in lines
    assert "    section tools x" in lines  # ':' would end the task name in Mermaid
    assert "    convert :done, 138000, 140000" in lines


def test_no_step_no_chart() -> None:
    assert timeline.markdown([event("amd64/base", "", "skipped", 1.0)]) == ""
    section = timeline.markdown(EVENTS)
    assert section.startswith("### Timeline\n\n```mermaid\ngantt\n") and section.endswith("```\n")


def test_the_summary_job_merges_every_jobs_records(tmp_path: Path) -> None:
    for job, events in {"runs-1-build-amd64-base": EVENTS[:2], "runs-1-test-amd64-base": EVENTS[3:5]}.items():
        folder = tmp_path / job / "gh-7-1"
        folder.mkdir(parents=True)
        (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"cut short')
    other = tmp_path / "runs-1-old" / "gh-6-1"
    other.mkdir(parents=True)
    (other / "events.jsonl").write_text(json.dumps(event("amd64/old", "build", "done", 1.0)) + "\n")
    merged = events_under(tmp_path, "gh-7-1")
    assert [e["time"] for e in merged] == [100.0, 110.0, 110.5, 112.0]
    text = markdown(merged, "gh-7-1")
    assert "| `base` | build | ✅ done | 10.0s |" in text and "| `base` | transfer |" in text
    assert "```mermaid" in text and "old" not in text
    assert "No image step ran" in markdown([], "gh-7-1")
    with pytest.raises(CIError, match="no folder of run records"):
        events_under(tmp_path / "missing")
