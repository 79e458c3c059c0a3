"""Publishing against a plain upload of the same bytes, and the bytes a one-layer change sends.

Against the loopback services `inv local.up` starts (moto's S3 server on 127.0.0.1:9000, the
registry on 127.0.0.1:5000) with a throw-away gpg key:

- object store: `Publishing.publish` of a 64 MiB image file (its sha256 checked against the one the
  site recorded, gpg signature, the file with Content-MD5, signature, provenance, the signed catalog)
  against boto3's own `upload_file` of the same file to the same store, each with its defaults (the
  target's `multipart_threshold_mb`/`part_size_mb`/`uploads`, one PUT up to 64 MiB, then 16 MiB parts
  8 at a time; boto3's TransferConfig: 8 MiB threshold and parts, 10 at a time, CRC32 checksums).
  `CI_BENCH_PUBLISH_PART_MB` gives both the same threshold and part size instead. Target (issue 20):
  <= 1.2x.
  The promoted result carries the file's size, md5 and sha256 as the convert step records them; they
  are computed outside the timed region, because in a real run the convert step computed them on
  the site host when it made the file. One more line times the path of a result promoted before
  checksums were recorded (md5 and sha256 read from the file before the PUT can start), unmeasured
  against the target, so both are seen.
- ORAS: the same file published as an ORAS artifact (blob, config, manifest, tags, attached
  signature and provenance, the catalog) against what any push of a file as an artifact does at
  least (`oras push`): its sha256, the blob (POST + PUT), the config blob and a manifest.
  Target <= 1.2x.
- registry: an image of an 8 MiB base layer and a small app layer is published; then the app layer
  changes and the new image is published: the bytes sent the second time, against the changed
  layer's size (the manifests, provenance and catalog are the rest).

`CI_BENCH_PUBLISH_MB` sets another size (HPC images are GBs; the fixed cost weighs less there). One
unmeasured warm-up round of each side first (bucket, repositories, connections, gpg-agent), then
`CI_BENCH_PUBLISH_ROUNDS` (5) interleaved rounds (publish, plain, publish, plain, ...) into the same
target, so load from other work on the machine falls on both sides alike; each timing is the median.
The store and the registry share this machine's cores: the note gives this process's CPU seconds
(with gpg) per side, which is what load from elsewhere stretches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from benchmarks.harness import Measurement
from ci.docker.oci import OCI_MANIFEST, Descriptor, OCIClient, canonical, sha256_digest
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

MIB = 1024 * 1024
SIZE = int(os.environ.get("CI_BENCH_PUBLISH_MB", "64")) * MIB  # HPC images are GBs: try 512
PART_MB = int(os.environ["CI_BENCH_PUBLISH_PART_MB"]) if os.environ.get("CI_BENCH_PUBLISH_PART_MB") else None
ROUNDS = int(os.environ.get("CI_BENCH_PUBLISH_ROUNDS", "5"))
WARM_UP = MIB


def _file(folder: Path, digest: str, size: int = SIZE) -> Path:
    path = folder / f"bench-1.0-{digest[:12]}.sif"
    with path.open("wb") as handle:
        for _ in range(size // MIB):
            handle.write(os.urandom(MIB))
    return path


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(action: Callable[[], object], cpu: list[float]) -> float:
    started, used = time.perf_counter(), _cpu()
    action()
    cpu.append(_cpu() - used)
    return time.perf_counter() - started


def _ratio(kind: str, plain_name: str, publish_times: list[float], plain_times: list[float],
           publish_cpu: list[float], plain_cpu: list[float], setting: str) -> list[Measurement]:
    publish, plain = statistics.median(publish_times), statistics.median(plain_times)
    return [Measurement(f"{kind}: publish {SIZE >> 20} MiB", publish, "s",
                        note=f"client CPU {statistics.median(publish_cpu):.2f} s"),
            Measurement(f"{kind}: {plain_name} {SIZE >> 20} MiB", plain, "s",
                        note=f"client CPU {statistics.median(plain_cpu):.2f} s"),
            Measurement(f"{kind}: publish / plain upload", publish / plain, "x", target=1.2,
                        note=f"medians of {ROUNDS} interleaved rounds; {setting}")]


@contextlib.contextmanager
def _emptied_at_the_end(client: Any, bucket: str) -> Iterator[None]:
    """The bench bucket removed afterwards: the S3 emulator keeps every object (rounds x sizes x 3 uploads,
    gigabytes at 256 MiB) on the machine's disk until it stops."""
    try:
        yield
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        client.delete_bucket(Bucket=bucket)


def _object_store(folder: Path) -> list[Measurement]:
    endpoint = local.s3_endpoint()
    bucket = f"ci-bench-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                          config=Config(s3={"addressing_style": "path"}))
    client.create_bucket(Bucket=bucket)
    # what a user gets from `upload_file` (TransferConfig's defaults), unless a part size is pinned for both
    transfer = TransferConfig() if PART_MB is None else \
        TransferConfig(multipart_threshold=PART_MB * MIB, multipart_chunksize=PART_MB * MIB)
    target = {"name": "store", "kind": "object-store", "endpoint": endpoint, "bucket": bucket, "prefix": "pub/",
              **({} if PART_MB is None else {"multipart_threshold_mb": PART_MB, "part_size_mb": PART_MB})}
    settings = publish_settings({"targets": [target]})
    times: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])
    unrecorded: tuple[list[float], list[float]] = ([], [])
    # one Publishing for every round, as one run publishes many images (and as the plain side keeps its client)
    with Publishing(settings, PROJECT) as publishing, _emptied_at_the_end(client, bucket):
        for round_ in range(-1, ROUNDS):  # round -1 warms both sides up and is not counted
            digest = hashlib.sha256(f"store-{bucket}-{round_}".encode()).hexdigest()
            path = _file(folder, digest, WARM_UP if round_ < 0 else SIZE)
            # the checksums the convert step recorded when it made the file (not timed: done on the site)
            image = TestedImage(promoted_result("bench", "1.0", digest, path.name, tested=path),
                                lambda path=path: path)
            publish_times, plain_times, publish_cpu, plain_cpu = times if round_ >= 0 else ([], [], [], [])
            publish_times.append(_timed(lambda image=image: publishing.publish(image), publish_cpu))
            plain_times.append(_timed(lambda path=path, round_=round_: client.upload_file(
                str(path), bucket, f"plain/{round_}/{path.name}", Config=transfer), plain_cpu))
            # a result promoted before checksums were recorded: the same bytes, under another digest
            old = hashlib.sha256(f"unrecorded-{bucket}-{round_}".encode()).hexdigest()
            unrecorded_image = TestedImage(promoted_result("bench", "1.0", old, path.name), lambda path=path: path)
            old_times, old_cpu = unrecorded if round_ >= 0 else ([], [])
            old_times.append(_timed(lambda image=unrecorded_image: publishing.publish(image), old_cpu))
            path.unlink()
    setting = "each side's defaults" if PART_MB is None else f"both in {PART_MB} MiB parts"
    plain = statistics.median(times[1])
    old_publish = statistics.median(unrecorded[0])
    return [*_ratio("object store", "plain upload_file", *times, setting),
            Measurement("object store: publish without recorded checksums / plain upload", old_publish / plain, "x",
                        note=f"a result promoted before convert recorded them: {old_publish:.2f} s, client CPU "
                             f"{statistics.median(unrecorded[1]):.2f} s (not the target's path)")]


def _oras(folder: Path) -> list[Measurement]:
    token = uuid.uuid4().hex[:10]
    settings = publish_settings({"targets": [{"name": "sif", "kind": "oras", "address": REGISTRY,
                                              "insecure": True, "prefix": f"bench{token}/"}]})
    times: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])
    with Publishing(settings, PROJECT) as publishing, OCIClient(REGISTRY, insecure=True) as client:
        for round_ in range(-1, ROUNDS):
            size = WARM_UP if round_ < 0 else SIZE
            digest = hashlib.sha256(f"oras-{token}-{round_}".encode()).hexdigest()
            path = _file(folder, digest, size)
            # the plain upload must not find the blob already there: another file of the same size
            other = _file(folder, hashlib.sha256(f"plain-{token}-{round_}".encode()).hexdigest(), size)
            image = TestedImage(promoted_result("bench", "1.0", digest, path.name, tested=path),  # as convert did
                                lambda path=path: path)
            publish_times, plain_times, publish_cpu, plain_cpu = times if round_ >= 0 else ([], [], [], [])
            publish_times.append(_timed(lambda image=image: publishing.publish(image), publish_cpu))
            plain_times.append(_timed(lambda other=other, round_=round_: _plain_artifact_push(
                client, f"plain{token}/bench", f"r{round_}", other), plain_cpu))
            path.unlink()
            other.unlink()
    return _ratio("oras", "plain artifact push", *times, "a push as `oras push` makes it")


def _plain_artifact_push(client: OCIClient, repo: str, tag: str, path: Path) -> None:
    """What any push of a file as an artifact does at least (`oras push`): the file's digest, the
    blob, the config blob and a manifest."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    size = path.stat().st_size
    client.push_blob(repo, "sha256:" + digest.hexdigest(), size, path)
    config = b"{}"
    client.push_blob(repo, sha256_digest(config), len(config), config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": Descriptor("application/vnd.oci.empty.v1+json", sha256_digest(config), len(config)).as_dict(),
                "layers": [Descriptor("application/vnd.sylabs.sif.layer.v1.sif", "sha256:" + digest.hexdigest(), size,
                                      {"org.opencontainers.image.title": path.name}).as_dict()]}
    client.put_manifest(repo, tag, canonical(manifest), OCI_MANIFEST)


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
