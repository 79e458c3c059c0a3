"""Builds spread over several real Docker engines sharing the local registry (ci/buildhosts).

The engines are the extra `dockerd`s `inv local.up` starts (own data root, exec root, socket, no
bridge), plus, for the failover test, one more started and stopped by the test itself. Each test
writes its own definitions with a token, builds under its own registry prefix and its own
repository in the build registry, and removes its images from the engines afterwards.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from python_on_whales import DockerClient

from ci import api
from ci.buildhosts import BuildPool, BuildPoolSettings, DockerBuildHost, HostError, local_engines
from ci.config.build_hosts import BuildHostSettings
from ci.config.settings import Settings, load_settings
from ci.docker.engine import DockerEngine
from ci.local import services as local
from ci.pipeline.report import RunReport, to_markdown
from tests.support.definitions import definition
from tests.support.services import BASE_IMAGE, missing, unmet

pytestmark = [pytest.mark.docker, pytest.mark.registry]

MAIN = "unix:///run/docker.sock"
REGISTRY = local.REGISTRY_ADDRESS


def client(address: str) -> DockerClient:
    return DockerClient(client_call=["/usr/bin/docker"], host=address)


def host(name: str, address: str, builds: int = 2) -> DockerBuildHost:
    settings = BuildHostSettings(name=name, address=address, builds=builds)
    return DockerBuildHost(settings, DockerEngine(client_call=["/usr/bin/docker"], host=address, network="host"))


@pytest.fixture(scope="module")
def engines(docker_available: None) -> dict[str, str]:
    """The extra engines (b, c) with the local base image on each (through the registry, by digest)."""
    if not local.registry_ready():
        missing(f"the registry on {REGISTRY}", "GET /v2/ does not answer")
    extra = local_engines.engines()
    if not all(engine.ready() for engine in extra):
        missing("the extra Docker engines of the build pool", "their sockets under /run/containers-ci do not answer")
    if not client(MAIN).image.exists(BASE_IMAGE):
        unmet(f"the base image {BASE_IMAGE} does not exist; `inv local.base-image` builds it")
    seeding = BuildPool([host("main", MAIN), *(host(e.name, e.address) for e in extra)],
                        BuildPoolSettings(registry=REGISTRY, repository="containers-ci/seed"))
    for engine in extra:
        seeding.ensure(seeding.host(engine.name), BASE_IMAGE, io.StringIO())  # type: ignore[arg-type]
    return {engine.name: engine.address for engine in extra}


class Project:
    """Definitions in tmp_path, built on a pool of hosts with its own prefix and build repository."""

    def __init__(self, root: Path, hosts: list[dict[str, Any]], placement: str = "parent"):
        self.token = uuid.uuid4().hex[:10]
        self.prefix = f"bhtest{self.token}/"
        self.root = root
        self.definitions = root / "definitions"
        self.hosts = hosts
        self.placement = placement

    def add(self, name: str, parent: str = BASE_IMAGE, extra: str = "") -> None:
        dockerfile = (f"FROM {parent}\nRUN echo {self.token}-{name} > /{name}.txt\n"
                      f"COPY note.txt /{name}-note.txt\n{extra}")
        definition(self.definitions, name, dockerfile=dockerfile, files={"note.txt": f"{name}\n"})

    def settings(self) -> Settings:
        config = {"profile": "test", "profiles": {"test": {}}, "definitions": str(self.definitions),
                  "arch": ["amd64"], "registry_prefix": self.prefix, "state_dir": str(self.root / "state"),
                  "docker": {"client": "/usr/bin/docker", "buildkit": True, "network": "host"},
                  "build_hosts": self.hosts,
                  "build_pool": {"registry": REGISTRY, "repository": f"citest/{self.token}",
                                 "placement": self.placement}}
        return load_settings(config, self.root, profile="test")

    def build(self, **kwargs: Any) -> RunReport:
        return api.build(self.settings(), **kwargs)

    def logs(self, report: RunReport) -> Path:
        return self.root / "state" / "runs" / report.run_id / "logs"

    def remove_images(self, addresses: list[str], prune: bool = False) -> None:
        for address in addresses:
            docker = client(address)
            try:
                # Our names only: an image another name still holds (the shared base) stays.
                ours = [tag for image in docker.image.list() for tag in image.repo_tags or ()
                        if tag.startswith(self.prefix) or f"citest/{self.token}" in tag]
                if ours:
                    docker.image.remove(ours)
                pulled = [image.id for image in docker.image.list() if not image.repo_tags
                          and any(f"citest/{self.token}/" in ref for ref in image.repo_digests or ())]
                if pulled:  # parents pulled by digest, nameless now
                    docker.image.remove(pulled)
                if prune:
                    subprocess.run(["/usr/bin/docker", "-H", address, "builder", "prune", "-af"], check=True,
                                   capture_output=True)
            except Exception:  # a stopped engine has nothing left to clean
                continue


def build_data(report: RunReport) -> dict[str, dict[str, Any]]:
    return {image.name: next(step.data for step in image.steps if step.name == "build") for image in report.images}


@pytest.fixture
def spread(tmp_path: Path, engines: dict[str, str]) -> Iterator[Project]:
    project = Project(tmp_path, [{"name": name, "address": address, "builds": 2} for name, address in engines.items()],
                      placement="away")
    try:
        yield project
    finally:
        project.remove_images(list(engines.values()))


def test_every_child_builds_away_from_its_parent_on_the_parent_pulled_by_digest(spread: Project) -> None:
    """base <- mid <- leaf, base <- side: with placement `away` each child goes to the other host and gets
    its parent from the build registry by the digest the parent's build recorded."""
    spread.add("base")
    spread.add("mid", parent="base")
    spread.add("leaf", parent="mid")
    spread.add("side", parent="base")
    report = spread.build()
    assert report.ok, [(i.name, i.state, i.detail) for i in report.images]
    data = build_data(report)
    hosts = {name: item["host"] for name, item in data.items()}
    assert set(hosts.values()) == {"b", "c"}
    for child, parent in (("mid", "base"), ("leaf", "mid"), ("side", "base")):
        parent_tag = data[parent]["tag"]
        assert hosts[child] != hosts[parent], hosts
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", data[parent]["digest"])
        assert data[child]["pulled"] == {parent_tag: data[parent]["digest"]}  # pulled by that digest, recorded
        assert data[child]["parents"] == {parent_tag: data[parent]["digest"]}
        log = Path(data[child]["log"]).read_text()
        assert f"pulling {REGISTRY}/citest/{spread.token}/" in log and f"@{data[parent]['digest']}" in log
    # the report says which host built what: in JSON and in the summary
    assert {image.name: image.build_host for image in report.images} == hosts
    assert "Build hosts: **b**:" in to_markdown(report)


def test_a_rebuild_on_hosts_without_local_cache_takes_its_steps_from_the_registry_cache(spread: Project,
                                                                                       engines: dict[str, str]) -> None:
    spread.add("base")
    spread.add("mid", parent="base")
    first = spread.build()
    assert first.ok
    assert all(item["cached_steps"] == 0 for item in build_data(first).values())
    layers = {name: client(engines[item["host"]]).image.inspect(item["tag"]).root_fs.layers
              for name, item in build_data(first).items()}
    # Nothing of the first run is left on the engines, not even their local build cache.
    spread.remove_images(list(engines.values()), prune=True)
    second = spread.build(force=True)  # forced: built again (not fetched from the registry), from its cache
    assert second.ok, [(i.name, i.state, i.detail) for i in second.images]
    data = build_data(second)
    for name, item in data.items():
        assert item["cached_steps"] >= 2, (name, Path(item["log"]).read_text()[-2000:])  # RUN and COPY
        assert f"importing cache manifest from {REGISTRY}/citest/{spread.token}/" in Path(item["log"]).read_text()
    # the same layers again (the image ids differ only by the creation time label)
    assert layers == {name: client(engines[item["host"]]).image.inspect(item["tag"]).root_fs.layers
                      for name, item in data.items()}


def test_an_image_already_in_the_build_registry_is_pulled_by_digest_not_built_again(spread: Project,
                                                                                   engines: dict[str, str]) -> None:
    """What a workflow job on another build VM sees: nothing local, the build registry holds the images."""
    spread.add("base")
    spread.add("mid", parent="base")
    first = build_data(spread.build())
    spread.remove_images(list(engines.values()))
    second = spread.build()
    assert second.ok, [(i.name, i.state, i.detail) for i in second.images]
    for name, item in build_data(second).items():
        assert item["reused"] is True and item["digest"] == first[name]["digest"], item
        assert "pulled" in next(i.detail for i in second.images if i.name == name)
        assert client(engines[item["host"]]).image.exists(item["tag"])


@pytest.fixture
def doomed(engines: dict[str, str]) -> Iterator[local_engines.LocalEngine]:
    """One more engine, started here and stopped by the test (or at the end)."""
    engine = local_engines.LocalEngine(f"t{uuid.uuid4().hex[:6]}")
    main_bridge = Path("/sys/class/net/docker0").exists()
    engine.start()
    deadline = time.monotonic() + 60
    while not engine.ready():
        if time.monotonic() > deadline:
            pytest.fail(f"the extra engine {engine.name} did not start; see /var/log/containers-ci/")
        time.sleep(0.3)
    # Starting another engine leaves the main engine's bridge alone (a --bridge=none daemon deletes it).
    assert Path("/sys/class/net/docker0").exists() == main_bridge
    try:
        yield engine
    finally:
        stop(engine)
        engine.remove_bridge()
        shutil.rmtree(local_engines.STATE_ROOT / engine.name, ignore_errors=True)
        shutil.rmtree(engine.exec_root, ignore_errors=True)
        Path(local_engines.LOG_DIR / f"dockerd-{engine.name}.log").unlink(missing_ok=True)


def stop(engine: local_engines.LocalEngine) -> None:
    pid = engine.pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while engine.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_host_stopped_mid_build_hands_its_builds_to_the_others(tmp_path: Path, engines: dict[str, str],
                                                                 doomed: local_engines.LocalEngine) -> None:
    project = Project(tmp_path, [{"name": "doomed", "address": doomed.address, "builds": 2},
                                 {"name": "b", "address": engines["b"], "builds": 1}])
    for name in ("one", "two", "three"):
        project.add(name, extra="RUN sleep 5\n")
    logs: list[Path] = []

    def stop_when_busy() -> None:
        """Stop the doomed engine once a build has started on it (its log names the host)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            logs[:] = list((project.root / "state" / "runs").glob("*/logs/*/*build*"))
            if any("== build host doomed" in path.read_text(errors="replace") and "RUN sleep 5" in
                   path.read_text(errors="replace") for path in logs):
                stop(doomed)
                return
            time.sleep(0.2)

    stopper = threading.Thread(target=stop_when_busy, daemon=True)
    stopper.start()
    notes: list[str] = []
    try:
        report = project.build(listeners=[lambda item: notes.append(getattr(item, "text", ""))])
    finally:
        stopper.join(timeout=130)
        project.remove_images([engines["b"]])
    assert doomed.pid() is None, "the test did not manage to stop the engine during a build"
    assert report.ok, [(i.name, i.state, i.detail) for i in report.images]
    data = build_data(report)
    assert {item["host"] for item in data.values()} == {"b"}
    failed_over = [name for name, item in data.items() if item["attempts"]]
    assert failed_over, data
    for name in failed_over:
        assert [attempt["host"] for attempt in data[name]["attempts"]] == ["doomed"]
        log = Path(data[name]["log"]).read_text()
        assert "attempt 1 on build host doomed failed: the host stopped answering" in log
        assert "== build host b (attempt 2)" in log
    assert any("build host doomed is down" in note for note in notes)
    events = [json.loads(line) for line in (project.root / "state" / "runs" / report.run_id / "events.jsonl")
              .read_text().splitlines()]
    assert any(event.get("data", {}).get("attempts") for event in events)


def test_a_pool_whose_hosts_all_fail_to_answer_is_one_clear_error(tmp_path: Path, engines: dict[str, str]) -> None:
    project = Project(tmp_path, [{"name": "gone", "address": "unix:///run/containers-ci/no-such-engine.sock"}])
    project.add("lonely")
    with pytest.raises(Exception, match="no build host answers"):
        project.build()


def test_a_host_that_lacks_a_platform_is_not_given_its_builds(engines: dict[str, str]) -> None:
    pool = BuildPool([host("b", engines["b"])], BuildPoolSettings(registry=REGISTRY))
    pool_arm = BuildPool([DockerBuildHost(BuildHostSettings(name="b", address=engines["b"], platforms=("linux/amd64",)),
                                          DockerEngine(client_call=["/usr/bin/docker"], host=engines["b"]))],
                         BuildPoolSettings(registry=REGISTRY))
    placed = pool.acquire("linux/arm64")  # no platforms listed: the host builds what it is asked
    pool.release(placed.host)
    with pytest.raises(Exception, match="no build host builds linux/arm64"):
        pool_arm.acquire("linux/arm64")
    with pytest.raises(HostError):
        host("x", "unix:///run/containers-ci/no-such-engine.sock").has_image(BASE_IMAGE)
