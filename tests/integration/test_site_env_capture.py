"""The site-env step end to end on a stand-in site environment (a folder with a fake lib tree): captured
locally and over SSH, copied into an image by `COPY --from`, tested on Slurm, and a site update changes
the digest of exactly the images that use it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci.config.site_env import site_env_settings
from ci.docker.engine import DockerEngine
from ci.errors import SiteError
from ci.hosts import SSHHost
from ci.site.environment import capture, current_digest
from tests.support.services import DOCKER
from tests.support.site_helpers import Check, SiteProject, isolated_project, passing, promoted

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]

LIB = "opt/cray/libfabric/lib64/libfabric.so.1"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteProject]:
    for project in isolated_project(tmp_path_factory.mktemp("site-env")):
        image = f"site-env-{project.token}"
        standin = project.root / "login-node"
        (standin / LIB).parent.mkdir(parents=True)
        (standin / LIB).write_text("fabric stand-in 1\n")
        (standin / "usr/lib64").mkdir(parents=True)
        (standin / "usr/lib64/libcxi.so.1").write_text("cxi stand-in\n")
        project.add("consumer", [Check("fabric", f"cat /{LIB}\n", {"patterns": ["fabric stand-in 1"]})],
                    extra=f"COPY --from={image} /opt/cray /opt/cray\n")
        project.add("plain", [passing()])
        try:
            yield project
        finally:
            subprocess.run([DOCKER, "rmi", "-f", image], capture_output=True, check=False)


def options(project: SiteProject) -> dict[str, Any]:
    return {"paths": ["/opt/cray/libfabric", "/usr/lib64/libcxi.so.1"], "image": f"site-env-{project.token}",
            "root": str(project.root / "login-node")}


def config(project: SiteProject) -> Path:
    data = project.config()
    data["site_env"] = options(project)
    path = project.root / "with-site-env.yaml"
    path.write_text(yaml.safe_dump({"ci": data}, sort_keys=False))
    return path


def digests(project: SiteProject) -> dict[str, tuple[str, str]]:
    process = project.inv("plan", "--json", config=config(project))
    assert process.returncode == 0, process.stderr
    return {image["name"]: (image["digest"], image["action"]) for image in json.loads(process.stdout)["images"]}


def test_the_site_environment_reaches_the_image_and_a_site_update_rebuilds_its_users(project: SiteProject) -> None:
    run = project.inv("build-all", "--json", "--only", "consumer", config=config(project), timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "imported (content digest" in run.stderr
    assert set(promoted(project.site_root, "tested")) == {"consumer"}  # its test read the site's lib
    before = digests(project)
    assert before["consumer"][1] == "skip"

    unchanged = project.inv("site.env", config=config(project))
    assert unchanged.returncode == 0 and "unchanged, kept" in unchanged.stdout, unchanged.stderr
    assert digests(project) == before

    (project.root / "login-node" / LIB).write_text("fabric stand-in 2 (site update)\n")
    updated = project.inv("site.env", config=config(project))
    assert updated.returncode == 0 and "imported" in updated.stdout, updated.stderr
    after = digests(project)
    assert after["plain"] == before["plain"]
    assert after["consumer"][0] != before["consumer"][0] and after["consumer"][1] == "build"


def test_captured_over_ssh_as_from_a_login_node(project: SiteProject, ssh_host: SSHHost) -> None:
    engine = DockerEngine(client_call=[DOCKER])
    settings = site_env_settings(options(project))
    local_digest = current_digest(engine, settings.image)
    image = capture(ssh_host, str(project.root / "ssh-staging"), settings, engine)
    assert image.digest == local_digest and not image.built  # the same content, fetched over SSH
    assert image.files == 4  # libfabric/, lib64/, the library, libcxi
    assert not list((project.root / "ssh-staging").glob("*.tar")), "the tar on the site is removed"
    missing = site_env_settings({**options(project), "paths": ["/opt/cray/pe/mpich"]})
    with pytest.raises(SiteError, match=r"not found on .*: /opt/cray/pe/mpich"):
        capture(ssh_host, str(project.root / "ssh-staging"), missing, engine)
