"""Publishing against a plain upload of the same bytes, and the bytes a one-layer change sends.

Against the loopback services `inv local.up` starts (moto's S3 server on 127.0.0.1:9000, the
registry on 127.0.0.1:5000) with a throw-away gpg key:

- object store: `Publishing.publish` of a 64 MiB image file (checksums, gpg signature, the file in
  16 MiB parts with Content-MD5, signature, provenance, the signed catalog) against boto3's own
  `upload_file` of the same file with the same part size. Target (issue 20): <= 1.2x.
  `CI_BENCH_PUBLISH_MB` sets another size (HPC images are GBs; the fixed cost weighs less there).
- ORAS: the same file published as an ORAS artifact (blob, config, manifest, tags, attached
  signature and provenance, the catalog) against what any push of the file does at least: its
  sha256, then one blob upload (POST + PUT).
  Target <= 1.2x.
- registry: an image of an 8 MiB base layer and a small app layer is published; then the app layer
  changes and the new image is published: the bytes sent the second time, against the changed
  layer's size (the manifests, provenance and catalog are the rest).

Each timing is the median of three interleaved rounds (publish, plain, publish, plain, ...), so load
from other work on the machine falls on both sides alike.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from benchmarks.harness import Measurement
from ci.docker.oci import OCIClient
from ci.local import services as local
from ci.publish import Publishing, TestedImage, publish_settings
from ci.publish.base import SourceImage

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT / "tests"), str(PROJECT / "tests" / "integration")]

from tests.support.publish_helpers import (  # noqa: E402 - the key maker and image pusher live with the tests
    REGISTRY,
    layer,
    make_signing_key,
    promoted_result,
    push_image,
    signing_environment,
)

SIZE = int(os.environ.get("CI_BENCH_PUBLISH_MB", "64")) * 1024 * 1024  # HPC images are GBs: try 512
PART_MB = 16
ROUNDS = 3


def _file(folder: Path, digest: str) -> Path:
    path = folder / f"bench-1.0-{digest[:12]}.sif"
    with path.open("wb") as handle:
        for _ in range(SIZE // (1024 * 1024)):
            handle.write(os.urandom(1024 * 1024))
    return path


def _timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def _object_store(folder: Path) -> list[Measurement]:
    endpoint = local.s3_endpoint()
    bucket = f"ci-bench-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                          config=Config(s3={"addressing_style": "path"}))
    client.create_bucket(Bucket=bucket)
    transfer = TransferConfig(multipart_threshold=PART_MB * 1024 * 1024, multipart_chunksize=PART_MB * 1024 * 1024)
    publish_times, plain_times = [], []
    for round_ in range(ROUNDS):
        digest = hashlib.sha256(f"store-{round_}".encode()).hexdigest()
        path = _file(folder, digest)
        settings = publish_settings({"targets": [{"name": "store", "kind": "object-store", "endpoint": endpoint,
                                                  "bucket": bucket, "prefix": f"r{round_}/", "part_size_mb": PART_MB}]})
        image = TestedImage(promoted_result("bench", "1.0", digest, path.name), lambda path=path: path)
        with Publishing(settings, PROJECT) as publishing:
            publishing.signer  # noqa: B018 - the key import and the client are set-up, as for the plain upload
            publishing.publisher(publishing.targets[0])
            publish_times.append(_timed(lambda publishing=publishing, image=image: publishing.publish(image)))
        plain_times.append(_timed(lambda path=path, round_=round_: client.upload_file(
            str(path), bucket, f"plain/{round_}/{path.name}", Config=transfer)))
        path.unlink()
    publish, plain = statistics.median(publish_times), statistics.median(plain_times)
    return [Measurement(f"object store: publish {SIZE >> 20} MiB", publish, "s"),
            Measurement(f"object store: plain upload_file {SIZE >> 20} MiB", plain, "s"),
            Measurement("object store: publish / plain upload", publish / plain, "x", target=1.2,
                        note=f"medians of {ROUNDS} interleaved rounds")]


def _oras(folder: Path) -> list[Measurement]:
    token = uuid.uuid4().hex[:10]
    publish_times, plain_times = [], []
    for round_ in range(ROUNDS):
        digest = hashlib.sha256(f"oras-{token}-{round_}".encode()).hexdigest()
        path = _file(folder, digest)
        settings = publish_settings({"targets": [{"name": "sif", "kind": "oras", "address": REGISTRY,
                                                  "insecure": True, "prefix": f"bench{token}/r{round_}/"}]})
        image = TestedImage(promoted_result("bench", "1.0", digest, path.name), lambda path=path: path)
        with Publishing(settings, PROJECT) as publishing:
            publishing.signer  # noqa: B018
            publishing.publisher(publishing.targets[0])
            publish_times.append(_timed(lambda publishing=publishing, image=image: publishing.publish(image)))
        # the plain upload must not find the blob already there: another file of the same size
        other = _file(folder, hashlib.sha256(f"plain-{token}-{round_}".encode()).hexdigest())
        with OCIClient(REGISTRY, insecure=True) as client:
            plain_times.append(_timed(lambda client=client, other=other: _plain_blob_push(client, token, other)))
        path.unlink()
        other.unlink()
    publish, plain = statistics.median(publish_times), statistics.median(plain_times)
    return [Measurement(f"oras: publish {SIZE >> 20} MiB", publish, "s"),
            Measurement(f"oras: plain blob upload {SIZE >> 20} MiB", plain, "s"),
            Measurement("oras: publish / plain upload", publish / plain, "x", target=1.2,
                        note=f"medians of {ROUNDS} interleaved rounds")]


def _plain_blob_push(client: OCIClient, token: str, path: Path) -> None:
    """What any push of a file to a registry does at least: its digest, then one upload."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    client.push_blob(f"plain{token}/bench", "sha256:" + digest.hexdigest(), SIZE, path)


def _one_layer_change(folder: Path) -> list[Measurement]:
    token = uuid.uuid4().hex[:10]
    source = f"benchsrc{token}/app"
    base = {"base.bin": os.urandom(8 * 1024 * 1024)}
    settings = publish_settings({"targets": [{"name": "images", "kind": "registry", "address": REGISTRY,
                                              "insecure": True, "prefix": f"benchpub{token}/"}]})
    sent = []
    changed_layer = 0
    with Publishing(settings, PROJECT) as publishing:
        for version, app in (("1.0", b"first"), ("1.1", os.urandom(256 * 1024))):
            digest = hashlib.sha256(f"{token}-{version}".encode()).hexdigest()
            push_image(source, f"{version}-{digest[:12]}", [base, {"app.bin": app}])
            image = TestedImage(promoted_result("app", version, digest, "app.sif"), lambda: folder,
                                SourceImage(REGISTRY, source, f"{version}-{digest[:12]}"))
            (outcome,) = publishing.publish(image)
            sent.append(outcome.bytes_sent)
            changed_layer = len(layer({"app.bin": app})[0])  # the compressed layer blob, as the registry holds it
    return [Measurement("registry: first publication, bytes sent", sent[0] / 1e6, "MB"),
            Measurement("registry: one-layer change, bytes sent", sent[1] / 1e6, "MB",
                        note="the 8 MB base layer is not sent again"),
            Measurement("registry: one-layer change, sent / changed layer", sent[1] / changed_layer, "x",
                        note=f"changed layer blob {changed_layer} bytes; the rest is manifests, provenance, catalog")]


def run() -> list[Measurement]:
    if not local.s3_ready() or not local.registry_ready():
        raise SystemExit("publish benchmark: `inv local.up` first (the S3 server on 127.0.0.1:9000 and the registry)")
    key = make_signing_key()
    os.environ.update(signing_environment(key))
    with tempfile.TemporaryDirectory(prefix="ci-bench-publish-") as folder:
        results = _object_store(Path(folder)) + _oras(Path(folder)) + _one_layer_change(Path(folder))
    load = os.getloadavg()[0]
    for measurement in results:
        measurement.note = (measurement.note + "; " if measurement.note else "") + f"load average {load:.1f}"
    return results
