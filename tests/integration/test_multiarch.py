"""An arm64 image built on this amd64 machine through BuildKit and QEMU (binfmt_misc), and run here.

One tiny image (a 2 MB busybox base): emulation is slow, so the suite builds no more than this.
"""

from __future__ import annotations

import io
import subprocess
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from ci import api
from ci.config.settings import load_settings
from ci.docker.engine import DockerEngine
from ci.local import services as local
from ci.local.foreign_base import ARM64_BASE, ensure_foreign_base
from ci.pipeline.progress import ProgressPrinter
from tests.support.definitions import write_tree
from tests.support.services import require

pytestmark = pytest.mark.docker
DOCKER = "/usr/bin/docker"


def test_an_arm64_definition_builds_and_runs_as_aarch64(tmp_path: Path, docker_available: None) -> None:
    require(local.binfmt_ready(), "QEMU for arm64 through binfmt_misc (qemu-user-static, binfmt-support)")
    engine = DockerEngine([DOCKER])
    require(engine.image_exists("containers-ci/debian:bookworm"), "the base image containers-ci/debian:bookworm")
    ensure_foreign_base(engine)
    token = uuid.uuid4().hex[:8]
    write_tree(tmp_path / "defs" / "arm64", {
        "tiny/Dockerfile": f"FROM {ARM64_BASE}\nRUN uname -m > /arch && echo {token} > /token\n",
    })
    settings = load_settings({"profile": "t", "profiles": {"t": {}}, "definitions": str(tmp_path / "defs"),
                              "arch": ["arm64"], "registry_prefix": f"citest{token}/",
                              "state_dir": str(tmp_path / "state"), "docker": {"client": DOCKER}}, tmp_path,
                             profile="t")
    output = io.StringIO()
    report = api.build(settings, listeners=[ProgressPrinter(Console(file=output, width=200))])
    tag = f"citest{token}/tiny:latest-{report.images[0].digest12}"
    try:
        assert report.ok, output.getvalue()
        architecture = subprocess.run([DOCKER, "image", "inspect", "--format", "{{.Architecture}}", tag],
                                      capture_output=True, text=True, check=True).stdout.strip()
        assert architecture == "arm64"
        ran = subprocess.run([DOCKER, "run", "--rm", "--platform", "linux/arm64", tag, "sh", "-c",
                              "cat /arch; uname -m"], capture_output=True, text=True, check=True).stdout
        assert ran == "aarch64\naarch64\n"
    finally:
        subprocess.run([DOCKER, "image", "rm", "-f", tag], capture_output=True, check=False)
