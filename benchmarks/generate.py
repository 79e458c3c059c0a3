"""Generate a tree of synthetic definitions shaped like a real site's: a few bases, many leaves."""

from __future__ import annotations

import random
from pathlib import Path


def generate_definitions(root: Path, count: int, *, seed: int = 7, files_per_context: int = 5) -> Path:
    """Write `count` Dockerfile definitions under root/amd64 forming a DAG (roughly 1 in 10 are parents)."""
    rng = random.Random(seed)
    arch = root / "amd64"
    (root / "common").mkdir(parents=True, exist_ok=True)
    (root / "common" / "header.docker").write_text("ENV LANG=C.UTF-8\n")
    names: list[str] = []
    for index in range(count):
        name = f"image{index:04d}"
        folder = arch / name
        (folder / "tests").mkdir(parents=True, exist_ok=True)
        parent = rng.choice(names[: max(1, len(names) // 10)]) if names and index % 3 else None
        base = parent or "containers-ci/debian:bookworm"
        (folder / "Dockerfile").write_text(f"FROM {base}\nCOPY src/ /opt/{name}/\nRUN echo {name}\n")
        src = folder / "src"
        src.mkdir(exist_ok=True)
        for number in range(files_per_context):
            (src / f"file{number}.txt").write_text(f"{name} {number} " * rng.randint(10, 400))
        (folder / ".dockerignore").write_text("*.log\n")
        (folder / "tests" / "run.sh").write_text("#!/bin/sh\necho ok\n")
        (folder / "container.yaml").write_text(
            f'version: "1.{index}"\nfragments: [common/header.docker]\nbuild_args: {{N: "{index}"}}\n'
            "tests:\n  - name: run\n    script: tests/run.sh\n    slurm: {nodes: 1, ntasks: 1, time: \"00:05:00\"}\n"
            "    expect: {patterns: [ok]}\n"
        )
        names.append(name)
    return root
