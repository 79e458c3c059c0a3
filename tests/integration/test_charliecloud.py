"""The engines that run here for real: Charliecloud (from the Docker engine and from a `docker save`
archive), Docker itself, a test run as a Slurm job inside a SquashFS image, and a pull from the
loopback registry.

The image under test is tiny and built FROM the local base: an ENV (must reach the test through
ch-run --set-env), a new file, and a deleted one (a whiteout the archive flattener must honour).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci import definitions
from ci.definitions import Expectation, MetricCheck, SlurmResources
from ci.engines import Bind, CharliecloudEngine, DockerSiteEngine, EngineSettings, ImageSource, make_engine
from ci.hosts import LocalHost
from ci.local import services as local
from ci.pipeline.testjobs import judge, render_job_script
from ci.schedulers import JobSpec, JobState, SlurmScheduler
from tests.support.services import require_charliecloud, require_docker, require_registry, require_slurm

DOCKER = "/usr/bin/docker"
TAG = f"cci-engine-test:{uuid.uuid4().hex[:10]}"
DOCKERFILE = """FROM containers-ci/debian:bookworm
ENV CI_MARK=from-the-image
RUN rm /etc/debian_version && echo "hello from the image" > /opt/hello
"""
PROBE = ["sh", "-c", 'echo "mark=$CI_MARK"; cat /opt/hello; [ -e /etc/debian_version ] || echo whiteout-ok; '
         'cat "$1/data.txt"', "sh"]
TIMINGS: dict[str, float] = {}




@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    require_docker()
    subprocess.run([DOCKER, "build", "-q", "-t", TAG, "-"], input=DOCKERFILE, text=True, check=True,
                   capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    yield TAG
    subprocess.run([DOCKER, "rmi", "-f", TAG], capture_output=True, check=False)


@pytest.fixture(scope="module")
def charliecloud() -> CharliecloudEngine:
    require_charliecloud()
    return CharliecloudEngine()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "tests").mkdir()
    (root / "tests" / "data.txt").write_text("bound from the host\n")
    return root


@pytest.fixture(scope="module")
def squashfs(charliecloud: CharliecloudEngine, image: str, site: Path) -> str:
    started = time.monotonic()
    result = charliecloud.convert(LocalHost(), ImageSource.daemon(image), str(site / "img.sqfs"))
    TIMINGS["charliecloud docker-daemon zstd:3"] = time.monotonic() - started
    assert result.size and result.size > 10_000_000
    assert not list(site.glob("img.sqfs.*"))  # no .part, no scratch folder left behind
    return result.output


def _run_inside(engine: CharliecloudEngine | DockerSiteEngine, image_file: str, site: Path) -> str:
    guest = engine.guest_path(0, str(site / "tests"))
    command = engine.exec_command(image_file, [*PROBE, guest], [Bind(str(site / "tests"), guest)])
    return LocalHost().run(command, env={"USER": os.environ.get("USER", "root")}, timeout=120).stdout


@pytest.mark.docker
def test_charliecloud_converts_from_the_docker_engine_and_runs(squashfs: str, site: Path) -> None:
    assert _run_inside(CharliecloudEngine(), squashfs, site).splitlines() == [
        "mark=from-the-image", "hello from the image", "whiteout-ok", "bound from the host"]


@pytest.mark.docker
def test_charliecloud_default_is_plain_ch_convert(image: str, site: Path) -> None:
    require_charliecloud()
    engine = make_engine("charliecloud", compression="default")
    started = time.monotonic()
    result = engine.convert(LocalHost(), ImageSource.daemon(image), str(site / "gzip.sqfs"))
    TIMINGS["ch-convert -i docker (gzip)"] = time.monotonic() - started
    assert "ch-convert" in result.command and "gzip compressed" in result.log
    assert _run_inside(CharliecloudEngine(), result.output, site).splitlines()[:3] == [
        "mark=from-the-image", "hello from the image", "whiteout-ok"]


@pytest.mark.docker
def test_charliecloud_converts_a_docker_archive(charliecloud: CharliecloudEngine, image: str, site: Path) -> None:
    archive = site / "img.tar"
    subprocess.run([DOCKER, "save", "-o", str(archive), image], check=True)
    started = time.monotonic()
    result = charliecloud.convert(LocalHost(), ImageSource.archive(str(archive)), str(site / "from-archive.sqfs"))
    TIMINGS["charliecloud docker-archive zstd:3"] = time.monotonic() - started
    assert _run_inside(charliecloud, result.output, site).splitlines() == [
        "mark=from-the-image", "hello from the image", "whiteout-ok", "bound from the host"]
    assert not list(site.glob("from-archive.sqfs.*"))


@pytest.mark.docker
@pytest.mark.slurm
def test_a_test_runs_as_a_slurm_job_inside_the_image(squashfs: str, site: Path, tmp_path: Path) -> None:
    require_slurm()
    script = tmp_path / "check.sh"
    script.write_text('#!/bin/sh\nset -eu\necho "mark=$CI_MARK task=$SLURM_PROCID"\ncat /opt/hello\n'
                      'echo "throughput 12.5 GB/s"\n')
    (site / "tests" / "check.sh").write_text(script.read_text())
    test = definitions.TestSpec(name="check", script=script, slurm=SlurmResources(ntasks=2, time="00:02:00"),
                    expect=Expectation(patterns=("mark=from-the-image task=0", "mark=from-the-image task=1"),
                                       metrics=(MetricCheck("throughput", r"throughput ([0-9.]+)", 10, None,
                                                            "GB/s"),)))
    output, exit_file = site / "logs" / "check.out", site / "logs" / "check.exit"
    scheduler = SlurmScheduler(LocalHost())
    spec = JobSpec(name="cci-enginetest-check", workdir=str(site), output=str(output), script="",
                   resources=test.slurm)
    text = render_job_script(test=test, engine=CharliecloudEngine(), image_file=squashfs,
                             script=str(site / "tests" / "check.sh"), workdir=str(site), output=str(output),
                             exit_file=str(exit_file), header=scheduler.directives(spec),
                             launch=scheduler.task_launch(test.slurm), image="engine-test")
    job_id = scheduler.submit(dataclasses.replace(spec, script=text))
    deadline = time.monotonic() + 90
    status = scheduler.poll([job_id])[job_id]
    while not status.terminal and time.monotonic() < deadline:
        time.sleep(0.5)
        status = scheduler.poll([job_id])[job_id]
    log = output.read_text()
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0), log
    verdict = judge(test.expect, status.exit_code, log)
    assert verdict.passed, verdict.reasons
    assert verdict.metrics[0].value == 12.5
    assert exit_file.read_text() == "0\n"


@pytest.mark.docker
def test_docker_engine_saves_and_runs_the_archive(image: str, site: Path) -> None:
    engine = DockerSiteEngine(EngineSettings(docker=DOCKER))
    started = time.monotonic()
    result = engine.convert(LocalHost(), ImageSource.daemon(image), str(site / "img-docker.tar"))
    TIMINGS["docker save"] = time.monotonic() - started
    assert result.output.endswith(".tar")
    assert _run_inside(engine, result.output, site).splitlines() == [
        "mark=from-the-image", "hello from the image", "whiteout-ok", "bound from the host"]


@pytest.mark.docker
@pytest.mark.registry
def test_engines_pull_from_the_plain_http_registry(image: str, site: Path) -> None:
    """The local default's path: transfer pushes to 127.0.0.1:5000, the engine converts from there."""
    require_registry()
    remote = f"{local.REGISTRY_ADDRESS}/{image}"
    subprocess.run([DOCKER, "tag", image, remote], check=True)
    try:
        subprocess.run([DOCKER, "push", remote], check=True, capture_output=True)
        subprocess.run([DOCKER, "rmi", remote], check=True, capture_output=True)
        source = ImageSource.registry(remote, insecure=True)
        docker = make_engine("docker", EngineSettings(docker=DOCKER))
        result = docker.convert(LocalHost(), source, str(site / "pulled.tar"))
        assert "mark=from-the-image" in _run_inside(docker, result.output, site)  # type: ignore[arg-type]
        subprocess.run([DOCKER, "rmi", remote], check=True, capture_output=True)
        if local.charliecloud_ready():
            charliecloud = CharliecloudEngine()
            result = charliecloud.convert(LocalHost(), source, str(site / "pulled.sqfs"))
            assert "mark=from-the-image" in _run_inside(charliecloud, result.output, site)
    finally:
        subprocess.run([DOCKER, "rmi", "-f", remote], capture_output=True, check=False)
        _delete_from_registry(image)


def _delete_from_registry(image: str) -> None:
    """Leave the registry as we found it (its config allows deletes; blobs wait for its GC)."""
    repository, tag = image.split(":")
    url = f"http://{local.REGISTRY_ADDRESS}/v2/{repository}/manifests/{tag}"
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers={"Accept": accept})) as answer:
            digest = answer.headers["Docker-Content-Digest"]
        urllib.request.urlopen(urllib.request.Request(url.rsplit("/", 1)[0] + f"/{digest}", method="DELETE")).close()
    except OSError:
        pass


def teardown_module() -> None:
    if TIMINGS:
        print("\nconversion timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items()))
