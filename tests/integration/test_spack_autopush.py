"""Spack builds that keep every finished package: per-package push to OCI and S3 caches, a re-run after a
failure that builds only the rest, S3 credentials as BuildKit secrets found nowhere, the concretized
version as the tag, and the janitor pruning an S3 cache in place.

Real: BuildKit and its secret mounts, the local registry (OCI cache), moto_server (an S3-compatible
server on loopback, `CI_S3_ENDPOINT`), boto3 on both sides, Docker's history and saved layers. The
stand-in plays Spack (ci/local/spack_standin/spack_standin.py): it pushes each package it builds to mirrors
added `--autopush`, as Spack does, and a spec with `+fail` fails to build; its summary line counts
what came from source.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ci import api
from ci.buildcache import caches as buildcache
from ci.buildcache import janitor
from ci.config.settings import Settings, load_settings
from ci.config.spack import S3Settings
from ci.docker.engine import DockerEngine
from ci.local import services as local
from ci.local.spack_builder import ensure_standin_builder, standin_tag
from ci.local.spack_standin import spack_standin
from ci.pipeline.progress import ProgressPrinter
from ci.spack.images import LOCK_LABEL, SPACK_VERSION_LABEL
from tests.support.definitions import write_tree
from tests.support.services import BASE_IMAGE, unmet
from tests.support.site_helpers import require

pytestmark = [pytest.mark.docker, pytest.mark.registry]
DOCKER = "/usr/bin/docker"
ENDPOINT = os.environ.get("CI_S3_ENDPOINT", "http://127.0.0.1:9000")
KEY_ID = "CANARYKEYID7f3a9c41"
SECRET = "CANARY-s3-secret-5e2b8d90aa17"
SIGNING = "CANARY-spack-signing-c0ffee21"
CANARIES = (KEY_ID, SECRET, SIGNING)


def s3_ready() -> bool:
    import httpx

    try:
        return httpx.get(ENDPOINT, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


class Project:
    """A definitions tree, its own state and registry prefix, a cache, and a Docker client that logs argv."""

    def __init__(self, root: Path, cache: str, builder: str, s3: dict[str, Any] | None = None):
        self.token = uuid.uuid4().hex[:8]
        self.root = root
        self.definitions = root / "definitions"
        self.cache = cache
        self.builder = builder
        self.s3 = s3 or {}
        self.prefix = f"citest{self.token}/"
        self.output = io.StringIO()
        self.argv_log = root / "docker-argv.log"
        self.client = root / "docker"
        self.client.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {shlex.quote(str(self.argv_log))}\n"
                               f"exec {DOCKER} \"$@\"\n")
        self.client.chmod(self.client.stat().st_mode | stat.S_IXUSR)

    def write_env(self, last: str) -> None:
        t = self.token
        write_tree(self.definitions / "amd64", {
            "env.yaml": f"spack:\n  specs: ['first{t}@1.0', 'second{t}@2.0', 'third{t}@3.0', '{last}']\n",
            "tool.yaml": f"spack:\n  specs: ['tool{t}']\n",  # unpinned: the tag follows the concretized version
        })

    def settings(self) -> Settings:
        config = {
            "profile": "test", "profiles": {"test": {}}, "definitions": str(self.definitions), "arch": ["amd64"],
            "registry_prefix": self.prefix, "state_dir": str(self.root / "state"),
            "docker": {"client": str(self.client), "buildkit": True, "network": "host"},
            "spack": {"buildcache": self.cache, "builder_image": self.builder, **({"s3": self.s3} if self.s3 else {})},
        }
        return load_settings(config, self.root, profile="test")

    def build(self, **kwargs: Any) -> Any:
        return api.build(self.settings(), listeners=[ProgressPrinter(Console(file=self.output, width=200))], **kwargs)

    def log(self, run_id: str, name: str) -> str:
        return (self.root / "state" / "runs" / run_id / "logs" / "amd64" / f"{name}.build.log").read_text(
            errors="replace")

    def images(self) -> list[str]:
        out = subprocess.run([DOCKER, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                             text=True, check=True).stdout.split()
        return [ref for ref in out if ref.startswith(self.prefix)]

    def cleanup(self) -> None:
        if self.images():
            subprocess.run([DOCKER, "image", "rm", "-f", *self.images()], capture_output=True, check=False)


def summary(log: str) -> tuple[int, int, int]:
    """(from source, from the binary cache, failed) of the stand-in's last install in a build log."""
    found = re.findall(r"stand-in install summary: (\d+) from source, (\d+) from binary cache, \d+ already "
                       r"installed, (\d+) failed", log)
    assert found, log[-2000:]
    source, cache, failed = found[-1]
    return int(source), int(cache), int(failed)


@pytest.fixture(scope="module")
def builder(docker_available: None) -> str:
    require(local.registry_ready(), f"the registry on {local.REGISTRY_ADDRESS}")
    engine = DockerEngine([DOCKER], network="host")
    require(engine.image_exists(BASE_IMAGE), f"the base image {BASE_IMAGE}")
    tag = standin_tag(BASE_IMAGE)
    ensure_standin_builder(engine, tag, BASE_IMAGE)
    return tag


@pytest.fixture()
def s3_bucket() -> Iterator[str]:
    if not s3_ready():
        unmet(f"no S3 server answers on {ENDPOINT} (moto_server); `inv local.up` starts it")
    import boto3

    bucket = f"spack-cache-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET)
    client.create_bucket(Bucket=bucket)
    yield bucket
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents") or []:
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


def fail_then_fix(project: Project, store: buildcache.CacheStore) -> tuple[Any, Any]:
    """A build that fails at its last package, then the fixed definition built again."""
    t = project.token
    project.write_env(f"last{t}@4.0+fail")
    first = project.build(only=["env"])
    assert not first.ok
    source, cached, failed = summary(project.log(first.run_id, "env"))
    assert (source, cached, failed) == (4, 0, 1)  # the runtime and three packages built, then the fourth failed
    assert sorted(entry.name for entry in store.entries()) == sorted(
        ["standin-runtime", f"first{t}", f"second{t}", f"third{t}"])  # each pushed as it was installed
    project.write_env(f"last{t}@4.0")  # the fix touches the last package only
    second = project.build(only=["env"])
    assert second.ok, project.output.getvalue()
    assert summary(project.log(second.run_id, "env")) == (1, 4, 0)  # one package built, the rest from the cache
    assert f"last{t}" in {entry.name for entry in store.entries()}
    return first, second


def test_oci_cache_keeps_what_a_failed_build_finished(tmp_path: Path, builder: str) -> None:
    cache = f"oci+http://{local.REGISTRY_ADDRESS}/spack-autopush-{uuid.uuid4().hex[:8]}"
    project = Project(tmp_path, cache, builder)
    try:
        with contextlib.closing(buildcache.open_store(cache)) as store:
            fail_then_fix(project, store)
        # the unpinned single-file environment: tagged with the concretized version, labelled from its lock
        built = project.build(only=["tool"])
        assert built.ok
        (image,) = [i for i in api.plan(project.settings(), only=["tool"]).plan.images.values()]
        assert image.spec.version == "1.0.0" and image.tag.endswith(f"tool:1.0.0-{image.digest12}")
        assert image.action.value == "skip"  # the next plan knows the version from the tag, and skips
        labels = json.loads(subprocess.run([DOCKER, "image", "inspect", "--format", "{{json .Config.Labels}}",
                                            image.tag], capture_output=True, text=True, check=True).stdout)
        assert labels[SPACK_VERSION_LABEL] == "0.0.0-stand-in" and len(labels[LOCK_LABEL]) == 64
        assert labels["org.opencontainers.image.version"] == "1.0.0"
        report = json.loads((project.root / "state" / "runs" / built.run_id / "report.json").read_text())
        (build_step,) = [s for i in report["images"] for s in i["steps"] if s["name"] == "build"]
        assert build_step["data"]["spack"]["version"] == "1.0.0"
        assert build_step["data"]["spack"]["roots"][0].startswith(f"tool{project.token}@1.0.0/")
    finally:
        project.cleanup()


def test_s3_cache_with_canary_credentials_found_nowhere(tmp_path: Path, builder: str, s3_bucket: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", KEY_ID), ("AWS_SECRET_ACCESS_KEY", SECRET)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SPACK_SIGNING_KEY", f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{SIGNING}\n"
                                            "-----END PGP PRIVATE KEY BLOCK-----\n")
    cache = f"s3://{s3_bucket}/amd64"
    project = Project(tmp_path, cache, builder, s3={"endpoint": ENDPOINT, "region": "us-east-1"})
    settings = S3Settings(endpoint=ENDPOINT, region="us-east-1")
    store = buildcache.open_store(cache, s3=settings)
    try:
        _, second = fail_then_fix(project, store)
        log = project.log(second.run_id, "env")
        assert "Trusted key" in log and f"Pushed last{project.token}@4.0/" in log  # pushed once installed
        # signed: the manifests of this cache are clearsigned with the key the secret carried
        manifest = store._read(store.entries()[0].key).decode()  # type: ignore[attr-defined]
        assert manifest.startswith("-----BEGIN PGP SIGNED MESSAGE-----")
        # the canaries: not in argv, logs, run records, reports, image history, saved layers, labels
        assert project.argv_log.is_file() and "--secret" in project.argv_log.read_text()
        for path in [project.argv_log, *(project.root / "state").rglob("*")]:
            if path.is_file():
                text = path.read_text(errors="replace")
                assert not any(canary in text for canary in CANARIES), path
        assert not any(canary in project.output.getvalue() for canary in CANARIES)
        (image,) = [ref for ref in project.images() if "/env:" in ref][:1]
        history = subprocess.run([DOCKER, "history", "--no-trunc", image], capture_output=True, text=True,
                                 check=True).stdout
        inspect = subprocess.run([DOCKER, "image", "inspect", image], capture_output=True, text=True,
                                 check=True).stdout
        saved = subprocess.run([DOCKER, "save", image], capture_output=True, check=True).stdout
        for canary in CANARIES:
            assert canary not in history and canary not in inspect and canary.encode() not in saved
        # the janitor prunes the bucket in place: an unreferenced old entry (with its blobs) goes, the
        # entries the built image's lock references stay, the index is rewritten from what remains
        writer = spack_standin.V3Cache(spack_standin.S3Store(cache, ENDPOINT))
        stray = spack_standin.node(f"stray{project.token}", "0.1", "", {"platform": "linux",
                                   "platform_os": "debian12", "target": "x86_64_v3"}, [])
        prefix = tmp_path / "stray"
        (prefix / "bin").mkdir(parents=True)
        (prefix / "bin" / "stray").write_text("stray\n" * 100)
        writer.push({"concrete_specs": {stray["hash"]: stray}}, stray, spack_standin.tar_prefix(prefix), None,
                    time.time())
        locks, warnings = api.spack_cache_locks(project.settings())
        keep, _ = janitor.referenced_hashes(locks)
        later = time.time() + 90 * janitor.DAY  # moto cannot backdate an object: look from three months on
        dry = janitor.plan(store, keep_hashes=keep, max_age_days=30, now=later)
        assert [r.entry.name for r in dry.remove] == [f"stray{project.token}"] and dry.bytes > 0
        assert janitor.plan(store, keep_hashes=keep, max_age_days=30, now=time.time()).remove == []  # young
        real = janitor.run(store, janitor.plan(store, keep_hashes=keep, max_age_days=30, now=later), yes=True)
        assert real.deleted and [r.entry.hash for r in real.remove] == [stray["hash"]]
        names = {entry.name for entry in store.entries()}
        assert f"stray{project.token}" not in names and f"last{project.token}" in names
        index_manifest = json.loads(store._read("amd64/v3/manifests/index/index.manifest.json"))  # type: ignore[attr-defined]
        index = json.loads(store._read(store.blob_key(index_manifest["data"][-1]["checksum"])))  # type: ignore[attr-defined]
        assert stray["hash"] not in index["database"]["installs"] and len(index["database"]["installs"]) == 5
        assert "janitor" not in " ".join(warnings)
        summary_text = janitor.markdown(real)
        assert f"stray{project.token}" in summary_text and not any(c in summary_text for c in CANARIES)
    finally:
        store.close()
        project.cleanup()
