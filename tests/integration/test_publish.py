"""Publishing against real services: the loopback registry (registry and oras kinds), moto's S3
server (object-store kind) and gpg with a throw-away key.

Each test pulls back what was published and compares bytes and checksums; `verify` must pass on
what publishing wrote and fail, naming the object, on a tampered or an unlisted one; an upload
killed half-way resumes; a second publication sends nothing; a canary passphrase and canary
credentials appear nowhere (argv, output, catalog, stored objects, registry blobs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci.docker.oci import OCIClient, sha256_digest
from ci.publish import Publishing, TestedImage, publish_settings
from ci.publish.base import SourceImage
from ci.publish.oras import SIF_CONFIG, SIF_LAYER
from ci.publish.signing import Keyring
from ci.publish.verify import verify
from tests.support.paths import PROJECT_DIR
from tests.support.publish_helpers import (  # key, environ: fixtures, found by name
    CANARY_ACCESS_KEY,
    CANARY_PASSPHRASE,
    CANARY_SECRET_KEY,
    REGISTRY,
    SigningKey,
    bucket_name,
    image_file,
    layer,
    make_signing_key,
    promoted_result,
    push_image,
    require_registry,
    s3_client,
    s3_endpoint,
    signing_environment,
)

DIGEST = "c0ffee" + "0" * 58



def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store(endpoint: str, bucket: str, **more: Any) -> dict[str, Any]:
    return {"name": "store", "kind": "object-store", "endpoint": endpoint, "bucket": bucket, "create_bucket": True,
            "prefix": "visualization/", "multipart_threshold_mb": 5, "part_size_mb": 5, **more}


# ---- object store ------------------------------------------------------------------------------


@pytest.fixture
def store_publication(tmp_path: Path, environ: dict[str, str]) -> Iterator[tuple[Publishing, TestedImage, Path, str]]:
    endpoint = s3_endpoint()
    bucket = bucket_name()
    path = image_file(tmp_path, "paraview", "5.12", DIGEST, 11 * 1024 * 1024 + 17)  # three parts of 5 MiB
    image = TestedImage(promoted_result("paraview", "5.12", DIGEST, path.name), lambda: path)
    settings = publish_settings({"targets": [_store(endpoint, bucket, descriptions={"paraview": "ParaView server"})]})
    with Publishing(settings, PROJECT_DIR) as publishing:
        yield publishing, image, path, bucket


def test_an_object_store_publication_pulls_back_byte_for_byte_with_a_lumi_catalog(store_publication: Any,
                                                                                   key: SigningKey) -> None:
    publishing, image, path, bucket = store_publication
    (outcome,) = publishing.publish(image)
    assert outcome.state == "published", outcome.error
    s3 = s3_client(s3_endpoint())
    stored = s3.get_object(Bucket=bucket, Key=f"visualization/paraview/{path.name}")["Body"].read()
    assert stored == path.read_bytes()
    etag = s3.head_object(Bucket=bucket, Key=f"visualization/paraview/{path.name}")["ETag"]
    assert etag.endswith('-3"'), etag  # three parts of 5 MiB, each under its Content-MD5
    catalog = json.loads(s3.get_object(Bucket=bucket, Key="visualization/data.json")["Body"].read())
    assert catalog["source_url"] == f"{s3_endpoint()}/{bucket}/visualization/"
    (entry,) = catalog["containers"]
    assert entry["name"] == "paraview" and entry["description"] == "ParaView server"
    assert entry["md5sum"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert entry["sha256"] == _sha256(path) and entry["size"] == path.stat().st_size
    assert (entry["version"], entry["digest"]) == ("5.12", DIGEST)
    assert entry["published"].endswith("Z") and entry["pull"].endswith(f"paraview/{path.name}")
    with Keyring(s3.get_object(Bucket=bucket, Key="visualization/pgp-public.asc")["Body"].read()) as keyring:
        assert keyring.fingerprint == key.fingerprint
        signature = s3.get_object(Bucket=bucket, Key=f"visualization/{entry['signature']}")["Body"].read()
        assert keyring.valid(path, signature)
    provenance = json.loads(s3.get_object(Bucket=bucket, Key=f"visualization/{entry['provenance']}")["Body"].read())
    assert provenance["definition"]["digest"] == DIGEST and provenance["subject"]["sha256"] == _sha256(path)
    assert provenance["tests"] == [{"name": "smoke", "passed": True, "reasons": []}]
    assert provenance["build"]["run_id"] == "20261207-000000-test" and provenance["tool"]["name"] == "containers-ci"
    assert len(provenance["source"]["commit"]) >= 7

    (again,) = publishing.publish(image)
    assert (again.state, again.bytes_sent) == ("already published", 0)
    result = verify(publishing.publisher(publishing.targets[0]), signer=publishing.signer)
    assert result.problems == [] and result.entries == 1


def test_a_tampered_or_unlisted_object_fails_verify_and_is_named(store_publication: Any) -> None:
    publishing, image, path, bucket = store_publication
    publishing.publish(image)
    s3 = s3_client(s3_endpoint())
    s3.put_object(Bucket=bucket, Key=f"visualization/paraview/{path.name}", Body=b"not the tested image")
    s3.put_object(Bucket=bucket, Key="visualization/paraview/smuggled.sif", Body=b"\x00" * 10)
    problems = verify(publishing.publisher(publishing.targets[0]), signer=publishing.signer).problems
    assert any(p.startswith(f"checksum mismatch: paraview/{path.name}") for p in problems), problems
    assert any(p.startswith(f"bad signature: paraview/{path.name}.asc") for p in problems), problems
    assert "not in the catalog: paraview/smuggled.sif" in problems


def test_a_store_whose_key_and_signatures_were_replaced_fails_against_the_configured_key(
        store_publication: Any) -> None:
    publishing, image, _path, bucket = store_publication
    publishing.publish(image)
    other = make_signing_key("another")
    s3 = s3_client(s3_endpoint())
    s3.put_object(Bucket=bucket, Key="visualization/pgp-public.asc", Body=other.public)
    problems = verify(publishing.publisher(publishing.targets[0]), signer=publishing.signer).problems
    assert any("public key beside the catalog is" in p for p in problems), problems


@pytest.mark.parametrize(("size_mb", "parts", "checksum"), [(7, 0, "crc32"), (8, 0, "crc32"), (9, 2, "crc32"),
                                                       (23, 5, "crc32"), (23, 5, "none")])
def test_files_up_to_the_threshold_go_in_one_put_and_larger_ones_in_parts(
        tmp_path: Path, environ: dict[str, str], size_mb: int, parts: int, checksum: str) -> None:
    bucket = bucket_name()
    path = image_file(tmp_path, "tool", "1.0", DIGEST, size_mb * 1024 * 1024)
    target = _store(s3_endpoint(), bucket, multipart_threshold_mb=8, part_size_mb=5, part_checksum=checksum)
    with Publishing(publish_settings({"targets": [target]}), PROJECT_DIR) as publishing:
        (outcome,) = publishing.publish(TestedImage(promoted_result("tool", "1.0", DIGEST, path.name), lambda: path))
    assert outcome.state == "published", outcome.error
    s3 = s3_client(s3_endpoint())
    key = f"visualization/tool/{path.name}"
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    if parts:  # a multipart ETag: the md5 of the parts' md5s, then the part count
        part_md5s = [hashlib.md5(chunk).digest() for chunk in _chunks(path, 5 * 1024 * 1024)]
        assert etag == f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{parts}"
        # with crc32, the store keeps the composite CRC32 of the parts it checked: the CRC32 of their CRC32s
        crcs = b"".join(zlib.crc32(chunk).to_bytes(4, "big") for chunk in _chunks(path, 5 * 1024 * 1024))
        kept = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED").get("ChecksumCRC32")
        composite = base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode()
        # (S3 adds "-<parts>"; moto does not)
        assert (kept.split("-")[0] if kept else None) == (composite if checksum == "crc32" else None), kept
    else:
        assert etag == hashlib.md5(path.read_bytes()).hexdigest()
    assert hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == _sha256(path)


def _chunks(path: Path, size: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def test_an_upload_killed_half_way_leaves_nothing_listed_and_the_retry_resumes(tmp_path: Path,
                                                                               environ: dict[str, str]) -> None:
    endpoint = s3_endpoint()
    bucket = bucket_name()
    # sixteen parts of 5 MiB: the kill comes when two are stored, with four in flight, far from the completion
    # (with eight, a loaded machine let the completion through before the kill, and nothing was left to resume)
    path = image_file(tmp_path, "big", "1.0", DIGEST, 80 * 1024 * 1024)
    config = {"targets": [_store(endpoint, bucket, uploads=4)], "signing": {}}
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from ci.publish import Publishing, TestedImage, publish_settings
        result = json.loads({json.dumps(json.dumps(promoted_result("big", "1.0", DIGEST, path.name)))})
        path = Path({str(path)!r})
        with Publishing(publish_settings({config!r}), Path({str(PROJECT_DIR)!r})) as publishing:
            for outcome in publishing.publish(TestedImage(result, lambda: path)):
                print(json.dumps(outcome.__dict__))
    """)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    s3 = s3_client(endpoint)
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    key = f"visualization/big/{path.name}"
    deadline = time.monotonic() + 120
    parts = 0
    try:
        while time.monotonic() < deadline and parts < 2 and process.poll() is None:
            uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) \
                if bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]] else []
            for upload in uploads:
                parts = len(s3.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"]).get("Parts", []))
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert parts >= 2, "the upload finished before it could be killed; make the file bigger"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=key), "a half upload became visible"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="visualization/data.json").get("Contents", [])
    assert listed == [], "the catalog was written before the file was complete"

    retry = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                           check=False)
    assert retry.returncode == 0, retry.stderr
    (outcome,) = [json.loads(line) for line in retry.stdout.splitlines()]
    assert outcome["state"] == "published", outcome
    assert outcome["bytes_sent"] <= path.stat().st_size - parts * 5 * 1024 * 1024 + 64 * 1024, \
        "the retry sent the parts the killed upload had stored again"
    stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == _sha256(path)
    catalog = json.loads(s3.get_object(Bucket=bucket, Key="visualization/data.json")["Body"].read())
    assert [entry["sha256"] for entry in catalog["containers"]] == [_sha256(path)]


# ---- registries ----------------------------------------------------------------------------------


@pytest.fixture
def registry_publication(tmp_path: Path, environ: dict[str, str]) -> Iterator[tuple[Publishing, str, str, Path]]:
    require_registry()
    token = uuid.uuid4().hex[:10]
    source_repo = f"citest{token}/source"
    path = image_file(tmp_path, "app", "2.0", DIGEST, 3 * 1024 * 1024 + 5)
    settings = publish_settings({"targets": [
        {"name": "images", "kind": "registry", "address": REGISTRY, "insecure": True, "prefix": f"pub{token}/",
         "latest": True},
        {"name": "sif", "kind": "oras", "address": REGISTRY, "insecure": True, "prefix": f"sif{token}/"}]})
    with Publishing(settings, PROJECT_DIR) as publishing:
        yield publishing, token, source_repo, path


def _image(source_repo: str, path: Path, version: str = "2.0") -> TestedImage:
    return TestedImage(promoted_result("app", version, DIGEST, path.name), lambda: path,
                       SourceImage(REGISTRY, source_repo, f"{version}-{DIGEST[:12]}"))


def test_registry_and_oras_publications_pull_back_and_a_second_run_sends_nothing(registry_publication: Any) -> None:
    publishing, token, source_repo, path = registry_publication
    digest = push_image(source_repo, f"2.0-{DIGEST[:12]}", [{"base.txt": b"base" * 1000}, {"app.txt": b"app"}])
    outcomes = {o.target: o for o in publishing.publish(_image(source_repo, path))}
    assert {o.state for o in outcomes.values()} == {"published"}, [o.error for o in outcomes.values()]
    assert outcomes["images"].pull == f"docker pull {REGISTRY}/pub{token}/app:2.0-{DIGEST[:12]}"
    assert outcomes["sif"].pull == f"apptainer pull oras://{REGISTRY}/sif{token}/app:2.0-{DIGEST[:12]}"

    pulled = subprocess.run(["/usr/bin/docker", "pull", "-q", f"{REGISTRY}/pub{token}/app:2.0-{DIGEST[:12]}"],
                            capture_output=True, text=True, check=False)
    try:
        assert pulled.returncode == 0, pulled.stderr
        inspected = subprocess.run(["/usr/bin/docker", "image", "inspect", "--format", "{{json .RepoDigests}}",
                                    f"{REGISTRY}/pub{token}/app:2.0-{DIGEST[:12]}"], capture_output=True, text=True,
                                   check=True)
        assert f"{REGISTRY}/pub{token}/app@{digest}" in json.loads(inspected.stdout)  # the tested manifest, unchanged
    finally:
        subprocess.run(["/usr/bin/docker", "image", "rm", f"{REGISTRY}/pub{token}/app:2.0-{DIGEST[:12]}"],
                       capture_output=True, check=False)
    with OCIClient(REGISTRY, insecure=True) as client:
        assert {client.manifest_digest(f"pub{token}/app", t) for t in ("2.0", "latest")} == {digest}
        found = client.manifest(f"sif{token}/app", f"2.0-{DIGEST[:12]}")
        assert found is not None
        manifest = json.loads(found[0])
        assert manifest["config"]["mediaType"] == SIF_CONFIG
        (layer,) = manifest["layers"]
        assert layer["mediaType"] == SIF_LAYER and layer["annotations"]["org.opencontainers.image.title"] == path.name
        assert client.blob(f"sif{token}/app", layer["digest"]) == path.read_bytes()
        assert manifest["annotations"]["io.containers-ci.definition.digest"] == DIGEST

    for target in publishing.targets:
        result = verify(publishing.publisher(target), signer=publishing.signer)
        assert result.problems == [], (target.name, result.problems)
    assert {(o.state, o.bytes_sent) for o in publishing.publish(_image(source_repo, path))} == {
        ("already published", 0)}


def test_a_base_layer_two_images_share_is_sent_once_and_mounted_for_the_second(registry_publication: Any) -> None:
    """Images of one stack share their base layers: the second image's copy mounts the base from the
    first one's repository (the registry links it) instead of sending it again."""
    publishing, token, _, path = registry_publication
    base = {"base.bin": os.urandom(2 * 1024 * 1024)}
    first_source, second_source = f"citest{token}/first", f"citest{token}/second"
    push_image(first_source, f"1.0-{DIGEST[:12]}", [base, {"one.txt": b"one"}])
    push_image(second_source, f"1.0-{DIGEST[:12]}", [base, {"two.txt": b"two"}])
    sent = {}
    for name, source in (("first", first_source), ("second", second_source)):
        image = TestedImage(promoted_result(name, "1.0", DIGEST, path.name), lambda: path,
                            SourceImage(REGISTRY, source, f"1.0-{DIGEST[:12]}"))
        outcome = {o.target: o for o in publishing.publish(image)}["images"]
        assert outcome.state == "published", outcome.error
        sent[name] = outcome.bytes_sent
    base_blob = layer(base)[0]
    assert sent["first"] > len(base_blob) and sent["second"] < len(base_blob) // 4, sent
    with OCIClient(REGISTRY, insecure=True) as client:
        assert client.has_blob(f"pub{token}/second", sha256_digest(base_blob))  # there, though never sent to it
    result = verify(publishing.publisher(publishing.targets[0]), signer=publishing.signer)
    assert result.problems == [] and result.entries == 2


def test_a_one_layer_change_sends_that_layer_and_manifests_only(registry_publication: Any) -> None:
    publishing, _token, source_repo, path = registry_publication
    base = {"base.bin": os.urandom(512 * 1024)}
    push_image(source_repo, f"2.0-{DIGEST[:12]}", [base, {"app.txt": b"one"}])
    first = {o.target: o for o in publishing.publish(_image(source_repo, path))}["images"]
    assert first.bytes_sent > 512 * 1024
    other = "d" + DIGEST[1:]
    push_image(source_repo, f"2.1-{other[:12]}", [base, {"app.txt": b"two" * 100}])
    image = TestedImage(promoted_result("app", "2.1", other, path.name), lambda: path,
                        SourceImage(REGISTRY, source_repo, f"2.1-{other[:12]}"))
    second = {o.target: o for o in publishing.publish(image)}["images"]
    assert second.state == "published"
    assert second.bytes_sent < 64 * 1024, "the unchanged base layer was sent again"


def test_an_unlisted_tag_in_a_registry_target_fails_verify_and_is_named(registry_publication: Any) -> None:
    publishing, token, source_repo, path = registry_publication
    push_image(source_repo, f"2.0-{DIGEST[:12]}", [{"a": b"a"}])
    publishing.publish(_image(source_repo, path))
    push_image(f"pub{token}/app", "smuggled", [{"evil": b"evil"}])
    problems = verify(publishing.publisher(publishing.targets[0]), signer=publishing.signer).problems
    assert problems == [f"not in the catalog: {REGISTRY}/pub{token}/app:smuggled"]


def test_only_tested_images_are_published(registry_publication: Any) -> None:
    publishing, _token, source_repo, path = registry_publication
    result = {**promoted_result("app", "2.0", DIGEST, path.name), "verdict": "failed"}
    with pytest.raises(Exception, match="only tested images are published"):
        publishing.publish(TestedImage(result, lambda: path, SourceImage(REGISTRY, source_repo, "x")))


# ---- the tasks, on a site folder, with canaries --------------------------------------------------


def _gpg_recorder(folder: Path) -> Path:
    """A `gpg` first on PATH that records its argv, then runs Debian's: what our code put on command lines."""
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "argv.log"
    wrapper = folder / "gpg"
    wrapper.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {record}\nexec /usr/bin/gpg \"$@\"\n", encoding="utf-8")
    wrapper.chmod(0o755)
    return record


def test_inv_publish_verify_and_prune_on_a_site_with_canary_secrets(tmp_path: Path, key: SigningKey) -> None:
    require_registry()
    endpoint = s3_endpoint()
    bucket = bucket_name()
    token = uuid.uuid4().hex[:10]
    site = tmp_path / "site"
    versions = [("1.0", "a" * 64), ("1.1", "b" * 64), ("1.2", "e" * 64)]
    for version, digest in versions:
        stem = f"viz-{version}-{digest[:12]}"
        folder = site / "tested" / "viz" / stem
        path = image_file(folder, "viz", version, digest, 200 * 1024, suffix="sqfs")
        (folder / "result.json").write_text(json.dumps(promoted_result("viz", version, digest, path.name)))
        push_image("viz", f"{version}-{digest[:12]}", [{"v": version.encode()}])
    failed = site / "failed" / "broken" / "broken-1.0-ffffffffffff"
    image_file(failed, "broken", "1.0", "f" * 64, 1024, suffix="sqfs")
    (failed / "result.json").write_text(json.dumps({**promoted_result("broken", "1.0", "f" * 64, "x"),
                                                    "verdict": "failed"}))
    config = tmp_path / "invoke-test.yaml"
    config.write_text(yaml.safe_dump({"ci": {
        "profile": "local", "state_dir": str(tmp_path / "state"),
        "site": {"root": str(site), "scheduler": "direct", "engine": "charliecloud",
                 "registry": {"address": REGISTRY, "insecure": True}},
        "publish": {"targets": [
            _store(endpoint, bucket),
            {"name": "images", "kind": "registry", "address": REGISTRY, "insecure": True, "prefix": f"pub{token}/"},
            {"name": "sif", "kind": "oras", "address": REGISTRY, "insecure": True, "prefix": f"sif{token}/"}]}}}))
    record = _gpg_recorder(tmp_path / "bin")
    env = {**os.environ, **signing_environment(key), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "PYTHONPATH": str(PROJECT_DIR)}

    def inv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(PROJECT_DIR), "-f", str(config),
                               *args], capture_output=True, text=True, env=env, timeout=300, check=False)

    outputs = []
    first = inv("publish", "--json")
    outputs.append(first)
    assert first.returncode == 0, first.stderr
    published = json.loads(first.stdout)
    assert sorted((o["target"], o["version"], o["state"]) for o in published) == sorted(
        (t, v, "published") for t in ("store", "images", "sif") for v, _ in versions)
    assert not any(o["name"] == "broken" for o in published), "an image in failed/ was published"
    checked = inv("publish.verify", "sif")  # the library tests verify each kind; this is the task's exit code
    outputs.append(checked)
    assert checked.returncode == 0, (checked.stdout, checked.stderr)
    second = inv("publish", "--json")
    outputs.append(second)
    assert {o["state"] for o in json.loads(second.stdout)} == {"already published"}

    dry = inv("publish.prune", "store", "--keep", "2")
    outputs.append(dry)
    assert dry.returncode == 0 and "would remove viz 1.0" in dry.stderr and "--yes" in dry.stderr, dry.stderr
    s3 = s3_client(endpoint)
    assert len(json.loads(s3.get_object(Bucket=bucket, Key="visualization/data.json")["Body"].read())[
        "containers"]) == 3
    pruned = inv("publish.prune", "store", "--keep", "2", "--yes")
    outputs.append(pruned)
    assert pruned.returncode == 0, pruned.stderr
    catalog = json.loads(s3.get_object(Bucket=bucket, Key="visualization/data.json")["Body"].read())
    assert sorted(entry["version"] for entry in catalog["containers"]) == ["1.1", "1.2"]

    # after pruning the store is exactly its catalog: tampering with one file is the only problem verify finds
    s3.put_object(Bucket=bucket, Key="visualization/viz/viz-1.2-eeeeeeeeeeee.sqfs", Body=b"tampered")
    broken = inv("publish.verify", "store")
    outputs.append(broken)
    assert broken.returncode == 1
    problems = [line for line in broken.stderr.splitlines() if ": viz/" in line]
    assert [p.split(" (")[0] for p in problems] == ["checksum mismatch: viz/viz-1.2-eeeeeeeeeeee.sqfs",
                                                    "bad signature: viz/viz-1.2-eeeeeeeeeeee.sqfs.asc does not sign "
                                                    "viz/viz-1.2-eeeeeeeeeeee.sqfs"], broken.stderr

    bad = inv("publish.prune", "store", "--keep", "-3x", "--yes")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr

    canaries = [CANARY_PASSPHRASE, CANARY_ACCESS_KEY, CANARY_SECRET_KEY, key.armored.decode().splitlines()[3]]
    seen = "".join(o.stdout + o.stderr for o in outputs) + record.read_text()
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            seen += path.read_text(errors="replace")
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        seen += s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode(errors="replace")
    with OCIClient(REGISTRY, insecure=True) as client:
        for repo in (f"pub{token}/viz", f"sif{token}/viz", f"pub{token}/containers-ci-catalog"):
            for tag in client.tags(repo):
                found = client.manifest(repo, tag)
                assert found is not None
                seen += found[0].decode()
                for blob in json.loads(found[0]).get("layers", []):
                    if blob["size"] < 1024 * 1024:
                        seen += client.blob(repo, blob["digest"]).decode(errors="replace")
    assert "--detach-sign" in record.read_text(), "the recorder saw no signing: the check below would prove nothing"
    for canary in canaries:
        assert canary not in seen


def test_a_remote_sites_file_is_fetched_over_ssh_published_and_its_copy_removed(
        tmp_path: Path, environ: dict[str, str], ssh_host: Any) -> None:
    from ci.config.settings import RegistrySettings
    from ci.pipeline.steps.publish import tested_image
    from ci.site.layout import TESTED, Site

    endpoint = s3_endpoint()
    bucket = bucket_name()
    site = Site(ssh_host, str(tmp_path / "site"))
    stem = f"remote-1.0-{DIGEST[:12]}"
    folder = Path(site.promoted_path(TESTED, "remote", stem))
    path = image_file(folder, "remote", "1.0", DIGEST, 300 * 1024, suffix="sqfs")
    (folder / "result.json").write_text(json.dumps(promoted_result("remote", "1.0", DIGEST, path.name)))
    cache = tmp_path / "cache"
    image = tested_image(site, RegistrySettings(), REGISTRY, "remote", stem, cache)
    assert image is not None and image.source is not None and image.source.tag == f"1.0-{DIGEST[:12]}"
    assert tested_image(site, RegistrySettings(), REGISTRY, "remote", "remote-9-000000000000", cache) is None
    settings = publish_settings({"targets": [_store(endpoint, bucket)]})
    with Publishing(settings, PROJECT_DIR) as publishing:
        (outcome,) = publishing.publish(image)
    assert outcome.state == "published", outcome.error
    stored = s3_client(endpoint).get_object(Bucket=bucket, Key=f"visualization/remote/{path.name}")["Body"].read()
    assert stored == path.read_bytes()
    assert list(cache.iterdir()) == [], "the copy fetched from the site was left behind"
