"""The OpenStack helper image, built for real FROM the local base image (no registry can be pulled from)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from ci.config.settings import deep_merge, load_settings
from ci.docker.engine import DockerEngine
from ci.errors import BuildError
from ci.openstack import helper_image as openstack_image
from tests.support.config import project_config
from tests.support.paths import PROJECT_DIR
from tests.support.services import BASE_IMAGE, require

pytestmark = [pytest.mark.docker]


@pytest.fixture
def engine(docker_available: None) -> DockerEngine:
    engine = DockerEngine()
    require(engine.image_exists(BASE_IMAGE), f"the base image {BASE_IMAGE} (`inv local.base-image`)")
    return engine


def test_the_helper_image_builds_once_and_holds_the_client_and_our_tasks(engine: DockerEngine,
                                                                          tmp_path: Path) -> None:
    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"),
                                        "openstack_image": {"repository": "containers-ci-test/openstack"}})
    settings = load_settings(raw, PROJECT_DIR, profile="local")
    said: list[str] = []
    first = openstack_image.ensure_helper_image(engine, settings, say=said.append)
    try:
        assert first.tag == f"containers-ci-test/openstack:{first.digest[:12]}" and not first.pushed
        labels = engine.client.image.inspect(first.tag).config.labels or {}
        assert labels[openstack_image.HELPER_DIGEST_LABEL] == first.digest
        again = openstack_image.ensure_helper_image(engine, settings, say=said.append)
        assert (again.action, again.tag) == ("present", first.tag)
        assert engine.image_exists("containers-ci-test/openstack:latest")
        run = subprocess.run(["/usr/bin/docker", "run", "--rm", "--network", "host", first.tag, "sh", "-c",
                              "openstack --version && inv --list && id -un"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        assert "openstack " in run.stdout and "vm.start" in run.stdout and run.stdout.strip().endswith("ci")
    finally:
        engine.remove([first.tag, "containers-ci-test/openstack:latest"])


def test_a_push_to_an_unreachable_registry_says_what_to_check(engine: DockerEngine, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"),
                                        "registry_prefix": f"127.0.0.1:{port}/",
                                        "openstack_image": {"repository": "containers-ci-test/openstack"}})
    settings = load_settings(raw, PROJECT_DIR, profile="local")
    assert openstack_image.helper_settings(settings).repository == f"127.0.0.1:{port}/containers-ci-test/openstack"
    try:
        with pytest.raises(BuildError, match=r"pushing .* failed: .*docker login"):
            openstack_image.ensure_helper_image(engine, settings)
    finally:
        repository = f"127.0.0.1:{port}/containers-ci-test/openstack"
        references = {tag for image in engine.client.image.list(filters=[("reference", repository)])
                      for tag in image.repo_tags or [] if tag.startswith(repository + ":")}
        engine.remove(sorted(references))  # only our test's tags: the image may carry others
