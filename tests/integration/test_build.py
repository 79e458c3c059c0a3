"""Docker builds against the real engine: a small DAG of tiny images FROM the local base image.

Every test writes its own definitions into tmp_path, with a token in each Dockerfile so that no
two tests (and no earlier run) share a digest, and builds them under a unique registry prefix.
The images are removed afterwards by that prefix and by the digests the runs reported.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from python_on_whales import DockerClient
from rich.console import Console

from ci import api
from ci.config.settings import Settings, load_settings
from ci.docker.engine import DockerEngine
from ci.pipeline.progress import ProgressPrinter
from ci.pipeline.report import RunReport
from ci.plan import DIGEST_LABEL, NAME_LABEL, TEST_DIGEST_LABEL
from tests.support.definitions import definition
from tests.support.services import BASE_IMAGE, unmet

pytestmark = pytest.mark.docker

DOCKER = DockerClient(client_call=["/usr/bin/docker"])


class Project:
    """A definitions tree in a temporary folder, built under its own registry prefix."""

    def __init__(self, root: Path):
        self.token = uuid.uuid4().hex[:12]
        self.prefix = f"citest{self.token}/"
        self.root = root
        self.definitions = root / "definitions"
        self.definitions.mkdir(parents=True)
        self.digest12s: set[str] = set()
        self.console_output = io.StringIO()

    def add(self, name: str, parent: str = BASE_IMAGE, extra: str = "", files: dict[str, str] | None = None,
            container_yaml: str | None = None) -> Path:
        dockerfile = f"FROM {parent}\nRUN echo {self.token}-{name} > /{name}.txt\n{extra}"
        return definition(self.definitions, name, dockerfile=dockerfile, files=files,
                          container_yaml=container_yaml)

    def settings(self, build_limit: int = 2, prefix: str | None = None) -> Settings:
        config = {
            "profile": "test",
            "profiles": {"test": {}},
            "definitions": str(self.definitions),
            "arch": ["amd64"],
            "registry_prefix": self.prefix if prefix is None else prefix,
            "state_dir": str(self.root / "state"),
            "docker": {"client": "/usr/bin/docker", "buildkit": True},
            "limits": {"build": build_limit},
        }
        return load_settings(config, self.root, profile="test")

    def build(self, prefix: str | None = None, **kwargs) -> RunReport:
        console = Console(file=self.console_output, width=200)
        report = api.build(self.settings(prefix=prefix), listeners=[ProgressPrinter(console)], **kwargs)
        self.digest12s |= {image.digest12 for image in report.images}
        return report

    def events(self, report: RunReport) -> list[dict]:
        path = self.root / "state" / "runs" / report.run_id / "events.jsonl"
        if not path.exists():  # a run with nothing to do records no events
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def cleanup(self) -> None:
        doomed = []
        for image in DOCKER.image.list(filters=[("label", DIGEST_LABEL)]):
            labels = image.config.labels or {}
            tags = image.repo_tags or []
            ours = labels.get(DIGEST_LABEL, "")[:12] in self.digest12s
            if ours or any(tag.startswith(self.prefix) for tag in tags):
                doomed.append(image.id)
        if doomed:
            DOCKER.image.remove(doomed, force=True)


def states(report: RunReport) -> dict[str, tuple[str, str]]:
    return {image.name: (image.state, image.detail) for image in report.images}


@pytest.fixture(scope="module")
def base_image(docker_available: None) -> str:
    if not DOCKER.image.exists(BASE_IMAGE):
        unmet(f"the base image {BASE_IMAGE} does not exist; `inv local.base-image` builds it")
    return BASE_IMAGE


@pytest.fixture
def project(tmp_path: Path, base_image: str) -> Iterator[Project]:
    found = Project(tmp_path)
    try:
        yield found
    finally:
        found.cleanup()


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[tuple[Project, RunReport]]:
    """base <- mid <- leaf, base <- side, and an unrelated `alone`; built once for the module."""
    built = Project(tmp_path_factory.mktemp("dag"))
    built.add("base", extra="COPY hello.txt /hello.txt\n", files={"hello.txt": "hello\n"},
              container_yaml="version: '1.0'\n")
    built.add("mid", parent="base", extra="COPY mid.txt /mid.txt\n", files={"mid.txt": "mid v1\n"})
    built.add("leaf", parent="mid", extra="RUN cat /hello.txt /mid.txt > /leaf.txt\n",
              files={"tests/check.sh": "cat /leaf.txt\n"})
    built.add("side", parent="base:latest")
    built.add("alone")
    try:
        yield built, built.build()
    finally:
        built.cleanup()


def test_first_run_builds_the_whole_dag(dag: tuple[Project, RunReport]) -> None:
    project, report = dag
    assert report.ok, project.console_output.getvalue()
    assert {image.name: image.state for image in report.images} == dict.fromkeys(
        ("base", "mid", "leaf", "side", "alone"), "done")
    assert [image.name for image in report.images] == ["alone", "base", "mid", "leaf", "side"]
    for image in report.images:
        assert image.tag == f"{project.prefix}{image.name}:{image.version}-{image.digest12}"
        assert DOCKER.image.exists(image.tag)


def test_images_carry_oci_labels_and_the_digest(dag: tuple[Project, RunReport]) -> None:
    project, _ = dag
    plan = api.plan(project.settings(), require_engine=True).plan
    for planned in plan.images.values():
        labels = DOCKER.image.inspect(planned.tag).config.labels
        assert labels[DIGEST_LABEL] == planned.digest
        assert labels[TEST_DIGEST_LABEL] == planned.test_digest
        assert labels[NAME_LABEL] == planned.name
        assert labels["org.opencontainers.image.title"] == planned.name
        assert labels["org.opencontainers.image.version"] == planned.spec.version
        assert labels["org.opencontainers.image.vendor"] == "containers-ci"
        assert labels["org.opencontainers.image.source"] == str(planned.spec.source)
        assert labels["org.opencontainers.image.created"].endswith("Z")
    assert plan.images["amd64/base"].spec.version == "1.0"


def test_child_is_built_on_this_runs_parent(dag: tuple[Project, RunReport]) -> None:
    project, report = dag
    leaf = next(image for image in report.images if image.name == "leaf")
    output = DOCKER.run(leaf.tag, ["cat", "/leaf.txt", "/base.txt"], remove=True)
    assert output == f"hello\nmid v1\n{project.token}-base"


def test_each_image_has_a_build_log_and_the_run_has_reports(dag: tuple[Project, RunReport]) -> None:
    project, report = dag
    run_folder = project.root / "state" / "runs" / report.run_id
    assert json.loads((run_folder / "report.json").read_text())["ok"] is True
    assert (run_folder / "junit.xml").read_text().count("<testcase") == 5
    for name in ("base", "mid", "leaf", "side", "alone"):
        log = (run_folder / "logs" / "amd64" / f"{name}.build.log").read_text()
        assert f"{project.token}-{name}" in log


def test_second_run_builds_nothing(dag: tuple[Project, RunReport]) -> None:
    project, _ = dag
    plan = api.plan(project.settings(), require_engine=True).plan
    assert {image.name: image.reason for image in plan.images.values()} == dict.fromkeys(
        ("base", "mid", "leaf", "side", "alone"), "already built")
    report = project.build()
    assert report.ok
    assert {image.state for image in report.images} == {"up to date"}
    assert [event for event in project.events(report) if event["state"] == "running"] == []


def test_touching_a_context_file_rebuilds_that_image_and_its_descendants(
        dag: tuple[Project, RunReport]) -> None:
    project, first = dag
    mid_file = project.definitions / "amd64" / "mid" / "mid.txt"
    original = mid_file.read_text()
    try:
        mid_file.write_text("mid v2\n")
        report = project.build()
        assert report.ok, project.console_output.getvalue()
        assert {image.name: image.state for image in report.images} == {
            "alone": "up to date", "base": "up to date", "mid": "done", "leaf": "done", "side": "up to date"}
        reasons = {image.name: image.reason for image in report.images}
        old_mid = next(image for image in first.images if image.name == "mid")
        assert reasons["mid"] == f"changed since {old_mid.digest12}"
        assert reasons["leaf"] == "parent mid is rebuilt"
        started = {event["image"] for event in project.events(report) if event["state"] == "running"}
        assert started == {"amd64/mid", "amd64/leaf"}
        leaf = next(image for image in report.images if image.name == "leaf")
        assert DOCKER.run(leaf.tag, ["cat", "/mid.txt"], remove=True) == "mid v2"
    finally:
        mid_file.write_text(original)
    assert {image.action for image in api.plan(project.settings()).plan.images.values()} == {"skip"}


def test_forced_rebuild_leaves_the_image_up_to_date(dag: tuple[Project, RunReport]) -> None:
    """--force moves the tag to a new image; the old one keeps the digest label, untagged, and must not
    turn "already built" into "built under another tag"."""
    project, _ = dag
    report = project.build(only=["alone"], force=True)
    assert states(report)["alone"][0] == "done"
    (alone,) = [image for image in report.images if image.name == "alone"]
    same_digest = [known for known in DockerEngine(client_call=["/usr/bin/docker"]).known_images()
                   if known.digest[:12] == alone.digest12]
    assert len(same_digest) == 2, "the old image stays, untagged, with the same digest label"
    plan = api.plan(project.settings(), require_engine=True).plan
    decisions = {image.name: (image.action.value, image.reason) for image in plan.images.values()}
    assert decisions == dict.fromkeys(("base", "mid", "leaf", "side", "alone"), ("skip", "already built"))


def test_images_built_under_another_prefix_are_tagged_not_rebuilt(dag: tuple[Project, RunReport]) -> None:
    project, _ = dag
    other = f"{project.prefix.rstrip('/')}-other/"
    report = project.build(prefix=other, only=["side"])
    assert {image.name: (image.action, image.state) for image in report.images} == {
        "base": ("skip", "up to date"), "side": ("tag", "done")}
    (side,) = [image for image in report.images if image.name == "side"]
    assert side.tag.startswith(other)
    original = f"{project.prefix}side:latest-{side.digest12}"
    assert DOCKER.image.inspect(side.tag).id == DOCKER.image.inspect(original).id


def test_failed_build_skips_descendants_and_others_go_on(project: Project) -> None:
    project.add("broken", extra="RUN echo about to fail && false\n")
    project.add("child", parent="broken")
    project.add("grandchild", parent="child")
    project.add("fine")
    report = project.build()
    assert not report.ok
    found = states(report)
    assert found["broken"][0] == "failed"
    assert "docker build of broken failed" in found["broken"][1]
    assert found["child"] == ("skipped", "parent broken failed")
    assert found["grandchild"] == ("skipped", "parent child skipped")
    assert found["fine"][0] == "done"
    assert DOCKER.image.exists(next(image.tag for image in report.images if image.name == "fine"))
    log = project.root / "state" / "runs" / report.run_id / "logs" / "amd64" / "broken.build.log"
    assert "about to fail" in log.read_text()
    summary = json.loads((project.root / "state" / "runs" / report.run_id / "report.json").read_text())
    assert summary["ok"] is False
    assert summary["counts"] == {"done": 1, "failed": 1, "skipped": 2}


def test_parallel_builds_respect_the_build_limit(project: Project) -> None:
    for index in range(4):
        project.add(f"sleeper{index}", extra="RUN sleep 3\n")
    report = project.build(jobs=2)
    assert report.ok, project.console_output.getvalue()
    events = [event for event in project.events(report) if event["step"] == "build"]
    intervals = []
    for image in sorted({event["image"] for event in events}):
        (start,) = [e["time"] for e in events if e["image"] == image and e["state"] == "running"]
        (end,) = [e["time"] for e in events if e["image"] == image and e["state"] == "done"]
        assert end - start >= 3
        intervals.append((start, end))
    assert len(intervals) == 4
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda point: (point[0], point[1]))
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak == 2, f"at most 2 builds at once, and 2 did run together: {intervals}"


def test_engine_lists_the_built_images_by_digest(dag: tuple[Project, RunReport]) -> None:
    _, report = dag
    engine = DockerEngine(client_call=["/usr/bin/docker"])
    tags: dict[str, set[str]] = {}
    names: dict[str, set[str]] = {}
    for known in engine.known_images():
        tags.setdefault(known.digest[:12], set()).update(known.tags)
        names.setdefault(known.digest[:12], set()).add(known.name)
    for image in report.images:
        assert image.tag in tags[image.digest12]
        assert names[image.digest12] == {image.name}
