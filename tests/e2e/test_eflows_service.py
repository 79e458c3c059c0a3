"""eFlows4HPC's workflow registry end to end: a real uvicorn replica, a git registry and software catalog of
our own (tests/support/eflows_fixtures.py), the local Spack stand-in builder, the real pipeline (Docker, the
registry, Slurm, Charliecloud).

PyPI is not reachable from inside a build here (an intercepting proxy's certificate), so pip's index is
emulated at its HTTP boundary: a PEP 503 simple index on loopback serving a wheel the test makes, named by
/etc/pip.conf in a base image the test derives from the stand-in builder (as a site points pip at its mirror).

A step with apt, pip and spack sections (and post_inst.sh) is requested the way eFlows4HPC's client.py
does it (GET /image_creation/login with HTTP basic, then the token as the basic user name with no password,
a body with string booleans), goes to FINISHED, is pushed to the local registry under images_prefix, and
its image has the apt package, the pip package, the post-install's file and the Spack view. The image
file is downloaded as cic_cli does (wget-style HTTP basic with user name and token).
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ci.docker.engine import DockerEngine
from ci.local import services as local
from ci.local.spack_builder import STANDIN_TAG, ensure_standin_builder
from tests.support.eflows_fixtures import UPSTREAM_CLIENT_AUTH, commit_change, make_catalog, make_registry
from tests.support.service_helpers import TERMINAL, ServiceProject, free_port, service_project
from tests.support.services import unmet

pytestmark = [pytest.mark.e2e, pytest.mark.service, UPSTREAM_CLIENT_AUTH]
DOCKER = "/usr/bin/docker"
BASE_IMAGE = "containers-ci/debian:bookworm"
CANARY = f"canary-{uuid.uuid4().hex}"


def make_wheel(folder: Path) -> Path:
    """A pure-Python wheel `eflows_canary-1.0` (package eflows_canary, VERSION = "1.0"), written by hand."""
    files = {"eflows_canary/__init__.py": b'VERSION = "1.0"\n',
             "eflows_canary-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: eflows-canary\nVersion: 1.0\n",
             "eflows_canary-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip('=')},"
                     f"{len(data)}\n" for name, data in files.items()) + "eflows_canary-1.0.dist-info/RECORD,,\n"
    wheel = folder / "files" / "eflows_canary-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("eflows_canary-1.0.dist-info/RECORD", record)
    index = folder / "simple" / "eflows-canary"
    index.mkdir(parents=True)
    (index / "index.html").write_text(f'<a href="../../files/{wheel.name}">{wheel.name}</a>\n', encoding="utf-8")
    return wheel


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProject]:
    root = tmp_path_factory.mktemp("eflows-e2e")
    engine = DockerEngine([DOCKER], network="host")
    if not engine.image_exists(BASE_IMAGE):
        unmet(f"the base image {BASE_IMAGE} is missing; `inv local.base-image` makes it")
    ensure_standin_builder(engine, STANDIN_TAG, BASE_IMAGE)
    make_wheel(root / "index")
    port = free_port()
    index = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory",
                              str(root / "index")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"eflows-e2e-base:{uuid.uuid4().hex[:8]}"
    conf = f"[global]\nindex-url = http://127.0.0.1:{port}/simple\ntrusted-host = 127.0.0.1\n"
    escaped = conf.replace("\n", "\\n")  # printf turns \n back into new lines
    recipe = f"FROM {STANDIN_TAG}\nRUN printf '{escaped}' > /etc/pip.conf\n"
    subprocess.run([DOCKER, "build", "--network", "host", "-t", base, "-"], input=recipe.encode(), check=True,
                   capture_output=True, timeout=300)
    registry = make_registry(root / "workflow-registry")
    commit_change(registry, "demo/all_three", {"eflows4hpc.yaml": {
        "apt": ["jq", "python3-pip"], "spack": {"specs": ["hello@2.12", "mypkg@1.0"]}, "pip": ["eflows-canary==1.0"]}})
    catalog = make_catalog(root / "software-catalog")
    prefix = f"{local.REGISTRY_ADDRESS}/eflows-{uuid.uuid4().hex[:8]}/"
    try:
        yield from service_project(root, workflow_registry=f"file://{registry}", software_catalog=str(catalog),
                                   images_prefix=prefix, base_image=base)
    finally:
        index.terminate()
        index.wait(timeout=10)
        subprocess.run([DOCKER, "image", "rm", base], capture_output=True, check=False)


@pytest.fixture(scope="module")
def server(project: ServiceProject) -> Any:
    # the push credentials are a canary: they must reach `docker login` on stdin only
    return project.serve(env={"CI_CANARY_TOKEN": CANARY, "CI_IMAGES_REGISTRY_USER": "eflows",
                              "CI_IMAGES_REGISTRY_TOKEN": CANARY})


class ArgvWatch:
    """Reads every process's command line while a build runs: a secret on any argv is seen."""

    def __init__(self, secret: str):
        self.secret, self.seen, self.scans = secret.encode(), [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    data = cmdline.read_bytes()
                except OSError:
                    continue
                if self.secret in data:
                    self.seen.append(data.replace(b"\0", b" ").decode(errors="replace"))
            self.scans += 1
            time.sleep(0.05)

    def __enter__(self) -> ArgvWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def test_a_step_with_apt_pip_and_spack_builds_pushes_and_downloads_as_the_eflows_clients_do(
        project: ServiceProject, server: Any, tmp_path: Path) -> None:
    user, api_token = "alice", project.token("alice")
    url = f"{server.url}/image_creation"
    login = requests.get(f"{url}/login", auth=(user, api_token), timeout=30)  # client.py's login
    assert login.status_code == 200, login.text
    session = requests.auth.HTTPBasicAuth(login.json()["token"], None)  # type: ignore[arg-type]
    body = {"machine": {"platform": "linux/amd64", "architecture": "x86_64", "container_engine": "singularity",
                        "mpi": "openmpi@4.1"},
            "workflow": "demo", "step_id": "all_three", "force": "false", "push": "true"}
    with ArgvWatch(CANARY) as watch:
        submitted = requests.post(f"{url}/build/", json=body, auth=session, timeout=120)
        assert submitted.status_code == 200, submitted.text
        build_id = submitted.json()["id"]
        deadline, status = time.monotonic() + 1500, {}
        while time.monotonic() < deadline:
            answer = requests.get(f"{url}/build/{build_id}", auth=session, timeout=30)
            assert answer.status_code == 200, answer.text
            status = answer.json()
            if status["status"] in TERMINAL:
                break
            time.sleep(2)
    assert watch.scans > 10 and watch.seen == [], watch.seen
    log = requests.get(f"{url}/build/{build_id}/logs", auth=session, timeout=30).text
    assert status["status"] == "FINISHED", (status, log[-4000:])
    source = status["source"]
    assert source["commit"] and source["catalog"]["commit"] and status["image_id"] == source["push"]
    assert status["image_id"].startswith(project.service_config["images_prefix"])
    assert f"pushed {status['image_id']}" in log and CANARY not in log and api_token not in log

    # image_id is pullable: drop the local tag, pull it from the registry, look inside
    subprocess.run([DOCKER, "image", "rm", status["image_id"]], capture_output=True, check=False)
    subprocess.run([DOCKER, "pull", status["image_id"]], capture_output=True, check=True, timeout=300)
    inside = subprocess.run(
        [DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "/bin/bash", status["image_id"], "-lc",
         "jq --version && python3 -c 'import eflows_canary; print(eflows_canary.VERSION)' "
         "&& test -x /opt/view/bin/hello && test -x /opt/view/bin/mypkg && cat /post_inst.done "
         "&& echo $SPACK_ENV && cat /all_three/src/data.txt"],
        capture_output=True, text=True, timeout=120, check=False)
    assert inside.returncode == 0, inside.stderr
    history = subprocess.run([DOCKER, "history", "--no-trunc", status["image_id"]], capture_output=True, text=True,
                             check=True).stdout
    inspect = subprocess.run([DOCKER, "image", "inspect", status["image_id"]], capture_output=True, text=True,
                             check=True).stdout
    assert CANARY not in history and CANARY not in inspect
    docker_config = Path.home() / ".docker" / "config.json"
    assert not docker_config.exists() or CANARY not in docker_config.read_text(errors="replace")
    assert "jq-" in inside.stdout and "1.0" in inside.stdout and "post-install ran" in inside.stdout
    assert "/all_three" in inside.stdout and "payload" in inside.stdout

    # cic_cli's download: HTTP basic with the user name and the long-lived token
    download = requests.get(f"{url}/images/download/{status['filename']}", auth=(user, api_token), timeout=300)
    assert download.status_code == 200 and hashlib.sha256(download.content).hexdigest() == status["sha256"]

    # the same step at the same commit is the same build
    again = requests.post(f"{url}/build/", json={**body, "force": "False"}, auth=session, timeout=120)
    assert again.status_code == 200 and again.json()["attached"] is True
    subprocess.run([DOCKER, "image", "rm", status["image_id"]], capture_output=True, check=False)
