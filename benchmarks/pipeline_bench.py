"""A real pipeline run on a DAG of 7 images, against its lower bound and a stage-synchronous schedule.

Everything runs for real (Docker builds, registry pushes, Charliecloud conversions, Slurm test
jobs) in a scratch site root and state folder. Step durations are read from the run's
events.jsonl; the bound and the stage-synchronous makespan are computed from those same
durations (benchmarks/schedule.py). Then one layer of one leaf image changes and the bytes that
the registry received for it are measured.

Targets (issue 3): makespan <= 1.10 x lower bound, and <= 0.7 x stage-synchronous.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from pathlib import Path

import yaml

from benchmarks.harness import Measurement
from benchmarks.schedule import critical_path, lower_bound, resource_bound, stage_synchronous
from ci import api
from ci.config.settings import deep_merge, load_settings
from ci.local import services as local

PROJECT = Path(__file__).resolve().parent.parent

# name -> parent (None: the local Debian base image). Two levels of children, one independent image.
DAG = {"root": None, "left": "root", "right": "root", "left-leaf": "left", "right-a": "right", "right-b": "right",
       "solo": None}


def _write_definitions(root: Path, token: str) -> None:
    for name, parent in DAG.items():
        folder = root / "amd64" / name
        (folder / "tests").mkdir(parents=True)
        base = parent or "containers-ci/debian:bookworm"
        # Each image adds a few MB of its own, so builds, pushes and conversions all have real work.
        (folder / "Dockerfile").write_text(
            f"FROM {base}\n"
            f"RUN head -c 12000000 /dev/urandom > /opt/{name}.bin && echo {token} > /opt/{name}.token\n"
            f"COPY payload.txt /opt/{name}.txt\n")
        (folder / "payload.txt").write_text(f"{name} version 1\n")
        (folder / "tests" / "check.sh").write_text(f"#!/bin/sh\nset -eu\nsleep 1\ncat /opt/{name}.token\necho ok\n")
        (folder / "container.yaml").write_text(
            "tests:\n  - name: check\n    script: tests/check.sh\n    expect: {patterns: [ok]}\n")


def _registry_bytes() -> int:
    result = subprocess.run(["du", "-sb", str(local.REGISTRY_STORAGE)], capture_output=True, text=True, check=False)
    return int(result.stdout.split()[0]) if result.returncode == 0 and result.stdout else 0


def _durations(run_folder: Path) -> tuple[dict[str, dict[str, float]], float]:
    """Step durations per image, and the makespan; prints the timeline (start, end) of every step."""
    durations: dict[str, dict[str, float]] = {}
    starts: list[float] = []
    ends: list[float] = []
    events = [json.loads(line) for line in (run_folder / "events.jsonl").read_text().splitlines()]
    origin = min(event["time"] for event in events)
    for event in events:
        if not event["step"]:
            continue
        image = event["image"].split("/", 1)[1]
        if event["state"] == "running":
            starts.append(event["time"])
        elif event["state"] in ("done", "failed"):
            durations.setdefault(image, {})[event["step"]] = event["duration"]
            ends.append(event["time"])
            began = event["time"] - event["duration"] - origin
            print(f"   {image:<10} {event['step']:<9} {began:6.1f} -> {event['time'] - origin:6.1f} s")
    return durations, max(ends) - min(starts)


def run() -> list[Measurement]:
    token = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
        scratch_dir = Path(scratch)
        definitions = scratch_dir / "defs"
        _write_definitions(definitions, token)
        project_config = yaml.safe_load((PROJECT / "invoke.yaml").read_text())["ci"]
        settings = load_settings(deep_merge(project_config, {
            "definitions": str(definitions), "state_dir": str(scratch_dir / "state"),
            "registry_prefix": f"bench{token}/",
            "site": {"root": str(scratch_dir / "site"), "poll_interval": 0.5},
        }), PROJECT, profile="local")
        report = api.run_pipeline(settings)
        if not report.ok:
            raise SystemExit(f"the benchmark run failed: {report.counts()} (run {report.run_id})")
        durations, makespan = _durations(settings.state_dir / "runs" / report.run_id)
        parents = {name: [parent] if parent else [] for name, parent in DAG.items()}
        limits = dict(settings.limits)
        bound = lower_bound(durations, parents, limits)
        synchronous = stage_synchronous(durations, parents, limits)

        before = _registry_bytes()
        (definitions / "amd64" / "left-leaf" / "payload.txt").write_text("left-leaf version 2\n")
        second = api.run_pipeline(settings, only=["left-leaf"])
        moved = _registry_bytes() - before
        image_bytes = _image_size(f"bench{token}/left-leaf")
        _remove_images(f"bench{token}/")
    note = f"critical path {critical_path(durations, parents):.1f} s, resource bound " \
           f"{resource_bound(durations, limits):.1f} s, limits {limits}"
    return [
        Measurement("pipeline makespan, 7 images (measured)", makespan, "s", None, f"run {report.run_id}"),
        Measurement("makespan / lower bound", makespan / bound, "x", 1.10, note),
        Measurement("makespan / stage-synchronous makespan", makespan / synchronous, "x", 0.70,
                    f"stage-synchronous {synchronous:.1f} s with the same durations"),
        Measurement("registry bytes received for a one-layer change", moved / 1e6, "MB", None,
                    f"image is {image_bytes / 1e6:.0f} MB; second run {second.counts()}"),
    ]


def _image_size(repository: str) -> int:
    result = subprocess.run(["docker", "image", "ls", repository, "--format", "{{.ID}}"], capture_output=True,
                            text=True, check=False)
    ids = result.stdout.split()
    if not ids:
        return 0
    inspect = subprocess.run(["docker", "image", "inspect", ids[0], "--format", "{{.Size}}"], capture_output=True,
                             text=True, check=False)
    return int(inspect.stdout.strip() or 0)


def _remove_images(prefix: str) -> None:
    listed = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                            text=True, check=False).stdout.split()
    mine = [ref for ref in listed if ref.startswith(prefix)]
    if mine:
        subprocess.run(["docker", "image", "rm", "-f", *mine], capture_output=True, check=False)
