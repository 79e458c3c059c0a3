"""Spack and .def definitions built for real with the stand-in builder: the build cache, the signing-key
canary, a Dockerfile definition on a Spack parent, and the janitor on the cache these builds filled.

The stand-in (ci/local/spack_standin/spack_standin.py) plays Spack at its command line; everything around
it (BuildKit, the secret mount, the OCI cache in the local registry, Docker's layers) is real.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from ci import api
from ci.buildcache import caches as buildcache
from ci.buildcache import janitor
from ci.config.settings import Settings, load_settings
from ci.local import services as local
from ci.local.spack_builder import ensure_standin_builder, standin_tag
from ci.pipeline.progress import ProgressPrinter
from tests.support.definitions import write_tree
from tests.support.services import BASE_IMAGE, require, require_registry

pytestmark = [pytest.mark.docker, pytest.mark.registry]
DOCKER = "/usr/bin/docker"
CANARY = "CANARY-spack-signing-7f3a9c"
KEY = f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{CANARY}\n-----END PGP PRIVATE KEY BLOCK-----\n"


class SpackProject:
    def __init__(self, root: Path):
        self.token = uuid.uuid4().hex[:8]
        self.root = root
        self.definitions = root / "definitions"
        self.cache = f"oci+http://{local.REGISTRY_ADDRESS}/spack-test-{self.token}"
        self.prefix = f"citest{self.token}/"
        self.output = io.StringIO()

    def write(self, version: str = "1.0.1") -> None:
        t = self.token
        write_tree(self.definitions / "amd64", {
            "single.yaml": f"spack:\n  specs: ['tool{t}@{version}']\n",
            "env/spack.yaml": f"spack:\n  specs: ['lib{t}@2.0+mpi', 'app{t}']\n"
                              "spacktainer:\n  files: ['files/note.txt:/opt/note.txt']\n",
            "env/files/note.txt": "a note\n",
            "env/Dockerfile.epilogue": "RUN cp /opt/note.txt /opt/note-copy.txt\n",
            "child/Dockerfile": "FROM env\nRUN . /etc/profile.d/z10_spack_environment.sh && app" + t + " > /app.txt\n",
            "greet.def": "Bootstrap: docker\nFrom: env\n%post\n    echo hi > /greeting\n%test\n    cat /greeting\n",
        })

    def settings(self) -> Settings:
        config = {
            "profile": "test", "profiles": {"test": {}}, "definitions": str(self.definitions), "arch": ["amd64"],
            "registry_prefix": self.prefix, "state_dir": str(self.root / "state"),
            "docker": {"client": DOCKER, "buildkit": True, "network": "host"},
            "spack": {"buildcache": self.cache, "builder_image": standin_tag(BASE_IMAGE)},
        }
        return load_settings(config, self.root, profile="test")

    def build(self, **kwargs: object) -> object:
        return api.build(self.settings(), listeners=[ProgressPrinter(Console(file=self.output, width=200))],
                         **kwargs)  # type: ignore[arg-type]

    def logs(self, run_id: str) -> dict[str, str]:
        folder = self.root / "state" / "runs" / run_id / "logs"
        return {path.name: path.read_text(errors="replace") for path in folder.rglob("*.log")}

    def images(self) -> list[str]:
        out = subprocess.run([DOCKER, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                             text=True, check=True).stdout.split()
        return [ref for ref in out if ref.startswith(self.prefix)]

    def cleanup(self) -> None:
        images = self.images()
        if images:
            subprocess.run([DOCKER, "image", "rm", "-f", *images], capture_output=True, check=False)


def summaries(logs: dict[str, str]) -> dict[str, tuple[int, int]]:
    """image -> (installed from source, from the binary cache), from the stand-in's summary line."""
    out = {}
    for name, text in logs.items():
        match = re.search(r"stand-in install summary: (\d+) from source, (\d+) from binary cache", text)
        if match:
            out[name.split(".")[0]] = (int(match.group(1)), int(match.group(2)))
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_available: None) -> Iterator[SpackProject]:
    require_registry()
    from ci.docker.engine import DockerEngine

    engine = DockerEngine([DOCKER], network="host")
    require(engine.image_exists(BASE_IMAGE), f"the base image {BASE_IMAGE}")
    ensure_standin_builder(engine, standin_tag(BASE_IMAGE), BASE_IMAGE)  # this stand-in's own tag
    found = SpackProject(tmp_path_factory.mktemp("spack"))
    found.write()
    try:
        yield found
    finally:
        found.cleanup()


def test_build_install_from_the_cache_and_no_key_anywhere(project: SpackProject,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACK_SIGNING_KEY", KEY)
    first = project.build()
    assert first.ok, project.output.getvalue()  # type: ignore[attr-defined]
    assert {i.name: i.state for i in first.images} == dict.fromkeys(  # type: ignore[attr-defined]
        ["single", "env", "child", "greet"], "done")
    logs = project.logs(first.run_id)  # type: ignore[attr-defined]
    counts = summaries(logs)  # the shared runtime package may come from source in both (parallel builds)
    assert {name: sum(pair) for name, pair in counts.items()} == {"single": 2, "env": 3}
    assert counts["single"][0] >= 1 and counts["env"][0] >= 2
    assert "Trusted key" in logs["env.build.log"]  # the secret reached the push step
    # a second build of the unchanged environments, without Docker's layer cache: nothing from source
    second = project.build(force=True, no_cache=True, only=["single", "env"])
    assert second.ok  # type: ignore[attr-defined]
    assert summaries(project.logs(second.run_id)) == {"single": (0, 2), "env": (0, 3)}  # type: ignore[attr-defined]
    # the signing key: in no log, no report, no run record, no image layer or history, no label
    records = project.root / "state"
    for path in records.rglob("*"):
        if path.is_file():
            assert CANARY not in path.read_text(errors="replace"), path
    for image in project.images():
        if "/env:" in image or "/single:" in image:  # the images whose builder stage had the secret
            saved = subprocess.run([DOCKER, "save", image], capture_output=True, check=True).stdout
            assert CANARY.encode() not in saved, image
        history = subprocess.run([DOCKER, "history", "--no-trunc", image], capture_output=True, text=True).stdout
        assert CANARY not in history and "SPACK_SIGNING_KEY=" not in history


def test_a_dockerfile_definition_builds_on_a_spack_parent(project: SpackProject) -> None:
    child = next(ref for ref in project.images() if "/child:" in ref)
    out = subprocess.run([DOCKER, "run", "--rm", "--entrypoint", "cat", child, "/app.txt", "/opt/note-copy.txt"],
                         capture_output=True, text=True, check=True).stdout
    assert f"app{project.token} 1.0.0" in out and "a note" in out
    greet = next(ref for ref in project.images() if "/greet:" in ref)
    test = subprocess.run([DOCKER, "run", "--rm", "--entrypoint", "/bin/sh", greet, "/.singularity.d/test"],
                          capture_output=True, text=True, check=True).stdout
    assert test == "hi\n"


def test_the_janitor_on_the_cache_these_builds_filled(project: SpackProject, request: pytest.FixtureRequest) -> None:
    settings = project.settings()
    store = buildcache.open_store(project.cache)
    request.addfinalizer(store.close)
    locks, warnings = api.spack_cache_locks(settings)
    assert len(locks) == 2 and warnings == []  # read from the built images, then recorded
    keep, _ = janitor.referenced_hashes(locks)
    assert janitor.plan(store, keep_hashes=keep, max_age_days=0, now=buildcache.now()).remove == []
    project.write(version="1.0.2")  # the single-file environment changes: its old root is no longer used
    assert project.build(only=["single"]).ok  # type: ignore[attr-defined]
    locks, _ = api.spack_cache_locks(settings)
    keep, _ = janitor.referenced_hashes(locks)
    dry = janitor.plan(store, keep_hashes=keep, max_age_days=0, now=buildcache.now())
    assert [(r.entry.name, r.entry.version) for r in dry.remove] == [(f"tool{project.token}", "1.0.1")]
    kept = janitor.plan(store, keep_hashes=keep, max_age_days=30, now=buildcache.now())
    assert kept.remove == []  # young entries stay
    real = janitor.run(store, janitor.plan(store, keep_hashes=keep, max_age_days=0, now=buildcache.now()), yes=True)
    assert [r.entry.hash for r in real.remove] == [r.entry.hash for r in dry.remove] and real.bytes == dry.bytes
    names = {entry.name for entry in store.entries()}
    assert f"tool{project.token}" in names  # the 1.0.2 entry
    assert janitor.plan(store, keep_hashes=keep, max_age_days=0, now=buildcache.now()).remove == []
    assert json.dumps(real.as_dict())
