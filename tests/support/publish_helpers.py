"""Shared pieces of the publish tests: a throw-away signing key, the loopback S3 store and registry,
a tested image laid out as promotion leaves it, and a small OCI image pushed to the site's registry.

Everything here is real: gpg makes the key, moto_server (`inv local.up`) is the store, Debian's
docker-registry is the registry. Nothing stands in for our own code.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ci.docker.oci import OCI_MANIFEST, OCIClient, canonical, sha256_digest
from ci.hosts import LocalHost
from ci.local import services as local
from ci.pipeline.steps.convert import RECORDED_PART_SIZE, checksum_command, parse_checksums
from tests.support.services import missing

REGISTRY = "127.0.0.1:5000"
CANARY_PASSPHRASE = "canary-passphrase-5f1e9c"
CANARY_ACCESS_KEY = "CANARYACCESSKEY7Q2W"
CANARY_SECRET_KEY = "canary-secret-key-8d4c1a"


def s3_endpoint() -> str:
    if not local.s3_ready() and local.s3_endpoint() == local.S3_DEFAULT_ENDPOINT:
        missing("the S3 server on 127.0.0.1:9000", "moto_server does not answer")
    return local.s3_endpoint()


def require_registry() -> None:
    if not local.registry_ready():
        missing(f"the registry on {REGISTRY}", "GET /v2/ does not answer")


@dataclass(frozen=True)
class SigningKey:
    armored: bytes
    public: bytes
    fingerprint: str


def make_signing_key(passphrase: str = CANARY_PASSPHRASE) -> SigningKey:
    """A fresh ed25519 key in a throw-away keyring; the passphrase goes to gpg on stdin."""
    home = tempfile.mkdtemp(prefix="ci-test-gnupg-")
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": home}
    base = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    try:
        subprocess.run([*base, "--quick-gen-key", f"CI test {uuid.uuid4().hex[:6]} <ci@example.invalid>", "ed25519",
                        "sign", "never"], input=passphrase.encode(), env=env, check=True, capture_output=True)
        armored = subprocess.run([*base, "--armor", "--export-secret-keys"], input=passphrase.encode(), env=env,
                                 check=True, capture_output=True).stdout
        public = subprocess.run(["gpg", "--batch", "--armor", "--export"], env=env, check=True,
                                capture_output=True).stdout
        listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env, check=True,
                                 capture_output=True, text=True).stdout
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        return SigningKey(armored, public, fingerprint)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
        subprocess.run(["rm", "-rf", home], check=False)


def signing_environment(key: SigningKey) -> dict[str, str]:
    return {"CI_PUBLISH_SIGNING_KEY": key.armored.decode(), "CI_PUBLISH_SIGNING_PASSPHRASE": CANARY_PASSPHRASE,
            "AWS_ACCESS_KEY_ID": CANARY_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": CANARY_SECRET_KEY}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    """A throwaway signing key with the canary passphrase (a test module imports this fixture by name)."""
    return make_signing_key()


@pytest.fixture
def environ(key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The signing key and canary store credentials in the environment, as a run would have them."""
    values = signing_environment(key)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield values


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=CANARY_ACCESS_KEY,
                        aws_secret_access_key=CANARY_SECRET_KEY, config=Config(s3={"addressing_style": "path"}))


def bucket_name() -> str:
    return f"ci-test-{uuid.uuid4().hex[:12]}"


def promoted_result(name: str, version: str, digest: str, file_name: str, *, tested: Path | None = None,
                    part_size: int = RECORDED_PART_SIZE) -> dict[str, Any]:
    """What promotion writes to tested/<name>/<stem>/result.json; with `tested`, the checksums the
    convert step records of that file (without, a result promoted before they were recorded)."""
    return {"name": name, "arch": "amd64", "version": version, "digest": digest, "test_digest": "t" * 64,
            "run_id": "20261207-000000-test", "verdict": "tested", "image_file": file_name,
            "tests": [{"name": "smoke", "passed": True, "reasons": []}],
            **(recorded_checksums(tested, part_size) if tested is not None else {})}


def recorded_checksums(path: Path, part_size: int = RECORDED_PART_SIZE) -> dict[str, Any]:
    """The file's size, md5, sha256 and parts' md5s as the convert step records them (coreutils on the
    site host); the convert step always records parts of RECORDED_PART_SIZE, tests may choose another."""
    run = LocalHost().run(checksum_command(str(path), part_size))
    return parse_checksums(run.stdout, part_size)


def image_file(folder: Path, name: str, version: str, digest: str, size: int, suffix: str = "sif") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-{digest[:12]}.{suffix}"
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1024 * 1024))
            handle.write(chunk)
            remaining -= len(chunk)
    return path


def layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzipped tar layer and its diff id."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0), sha256_digest(raw)


def push_image(repo: str, tag: str, layers: list[dict[str, bytes]], address: str = REGISTRY) -> str:
    """Push a small OCI image (one layer per dict) to a registry; returns its manifest digest."""
    blobs = [layer(files) for files in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in blobs]},
                         "config": {"Cmd": ["/bin/sh"]}}).encode()
    with OCIClient(address, insecure=True) as client:
        for blob, _ in blobs:
            client.push_blob(repo, sha256_digest(blob), len(blob), blob)
        client.push_blob(repo, sha256_digest(config), len(config), config)
        manifest = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                              "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                         "digest": sha256_digest(config), "size": len(config)},
                              "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                          "digest": sha256_digest(blob), "size": len(blob)} for blob, _ in blobs]})
        return client.put_manifest(repo, tag, manifest, OCI_MANIFEST)
