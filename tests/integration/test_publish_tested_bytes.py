"""Publishing sends the bytes the site tested: result.json's checksums (recorded by the convert step)
against the file's bytes, on the real loopback S3 store (moto) and registry with a real gpg key.

The convert step also records the md5 of each 16 MiB part: a target of that part size sends them as
Content-MD5 as they are (the store checks each part against the tested bytes), another hashes each
part as it goes. A file changed after promotion (one byte, same size) or truncated is refused before
anything is listed: no object, no unfinished upload, no tag, the catalog as it was; the outcome names the file
and says it changed since it was tested. A result promoted before checksums were recorded is
still published (the file is read and hashed first, as before).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.docker.oci import OCIClient
from ci.publish import Publishing, TestedImage, publish_settings
from ci.publish.signing import Keyring
from tests.support.paths import PROJECT_DIR
from tests.support.publish_helpers import (  # key, environ: fixtures, found by name
    REGISTRY,
    SigningKey,
    bucket_name,
    image_file,
    promoted_result,
    require_registry,
    s3_client,
    s3_endpoint,
)

DIGEST = "beef" + "1" * 60
OTHER = "cafe" + "2" * 60
MIB = 1024 * 1024



@pytest.fixture
def store(environ: dict[str, str]) -> Iterator[tuple[Publishing, str]]:
    bucket = bucket_name()
    settings = publish_settings({"targets": [
        {"name": "store", "kind": "object-store", "endpoint": s3_endpoint(), "bucket": bucket,
         "create_bucket": True, "prefix": "pub/", "multipart_threshold_mb": 5, "part_size_mb": 5}]})
    with Publishing(settings, PROJECT_DIR) as publishing:
        yield publishing, bucket


def _change_one_byte(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size - 1)


def _listing(bucket: str) -> tuple[list[str], list[str], bytes | None]:
    """The objects, the unfinished uploads and the catalog's bytes: what the target holds."""
    s3 = s3_client(s3_endpoint())
    objects = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    uploads = sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    catalog = s3.get_object(Bucket=bucket, Key="pub/data.json")["Body"].read() if "pub/data.json" in objects else None
    return objects, uploads, catalog


# The store's part size is 5 MiB: parts' md5s recorded for it are sent as they are; recorded for the
# convert step's 16 MiB, they do not fit and each part is hashed as it goes.
SIZES = [(3 * MIB + 5, 5 * MIB), (11 * MIB + 17, 5 * MIB), (11 * MIB + 17, 16 * MIB)]
SIZE_IDS = ["one PUT", "multipart, parts' md5s recorded", "multipart, other parts recorded"]


@pytest.mark.parametrize(("size", "part_size"), SIZES, ids=SIZE_IDS)
def test_recorded_checksums_publish_the_tested_bytes(store: Any, key: SigningKey, tmp_path: Path, size: int,
                                                     part_size: int) -> None:
    publishing, bucket = store
    path = image_file(tmp_path, "app", "1.0", DIGEST, size)
    result = promoted_result("app", "1.0", DIGEST, path.name, tested=path, part_size=part_size)
    assert ("image_file_part_md5s" in result) is (size > part_size)
    (outcome,) = publishing.publish(TestedImage(result, lambda: path))
    assert outcome.state == "published", outcome.error
    assert outcome.bytes_sent >= size
    s3 = s3_client(s3_endpoint())
    assert s3.get_object(Bucket=bucket, Key=f"pub/app/{path.name}")["Body"].read() == path.read_bytes()
    if size > 5 * MIB:
        data = path.read_bytes()
        part_md5s = b"".join(hashlib.md5(data[at:at + 5 * MIB]).digest() for at in range(0, size, 5 * MIB))
        etag = s3.head_object(Bucket=bucket, Key=f"pub/app/{path.name}")["ETag"].strip('"')
        assert etag == f"{hashlib.md5(part_md5s).hexdigest()}-3"
    (entry,) = json.loads(_listing(bucket)[2] or b"{}")["containers"]
    assert entry["md5sum"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and entry["size"] == size
    with Keyring(key.public) as keyring:
        assert keyring.valid(path, s3.get_object(Bucket=bucket, Key=f"pub/{entry['signature']}")["Body"].read())


@pytest.mark.parametrize(("size", "part_size"), SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("change", [_change_one_byte, _truncate], ids=["one byte", "truncated"])
def test_a_file_changed_after_promotion_is_refused_and_the_target_stays_as_it_was(
        store: Any, tmp_path: Path, size: int, part_size: int, change: Any) -> None:
    publishing, bucket = store
    earlier = image_file(tmp_path / "earlier", "other", "1.0", OTHER, MIB)
    (first,) = publishing.publish(TestedImage(promoted_result("other", "1.0", OTHER, earlier.name, tested=earlier),
                                              lambda: earlier))
    assert first.state == "published", first.error
    before = _listing(bucket)
    path = image_file(tmp_path, "app", "1.0", DIGEST, size)
    result = promoted_result("app", "1.0", DIGEST, path.name, tested=path, part_size=part_size)
    change(path)
    (outcome,) = publishing.publish(TestedImage(result, lambda: path))
    assert outcome.state == "failed"
    assert f"{path.name} changed since it was tested" in outcome.error and "\n" not in outcome.error
    assert _listing(bucket) == before


def test_the_sha256_is_checked_even_where_the_md5_matches(store: Any, tmp_path: Path) -> None:
    """The store checks the md5 only: a sha256 that differs (here: a result.json recording another one)
    is refused after the PUT, and the object is deleted again."""
    publishing, bucket = store
    path = image_file(tmp_path, "app", "1.0", DIGEST, MIB)
    result = {**promoted_result("app", "1.0", DIGEST, path.name, tested=path), "image_file_sha256": "0" * 64}
    (outcome,) = publishing.publish(TestedImage(result, lambda: path))
    assert outcome.state == "failed" and "changed since it was tested" in outcome.error
    assert _listing(bucket) == ([], [], None)


def test_recorded_part_md5s_that_are_not_the_files_leave_nothing_behind(store: Any, tmp_path: Path) -> None:
    """The parts' md5s go as recorded: where they are not those of the file (a store that checks
    Content-MD5 refuses each part; moto does not, and the completed object's ETag gives it away), the
    upload is undone and the outcome says the file is not the tested one."""
    publishing, bucket = store
    path = image_file(tmp_path, "app", "1.0", DIGEST, 11 * MIB + 17)
    result = promoted_result("app", "1.0", DIGEST, path.name, tested=path, part_size=5 * MIB)
    result["image_file_part_md5s"] = [*result["image_file_part_md5s"][:2], "0" * 32]
    (outcome,) = publishing.publish(TestedImage(result, lambda: path))
    assert outcome.state == "failed" and "changed since it was tested" in outcome.error, outcome.error
    assert _listing(bucket) == ([], [], None)


@pytest.mark.parametrize(("field", "value"), [("image_file_part_md5s", ["0" * 32]),  # one part of three
                                              ("image_file_part_md5s", "0" * 96),
                                              ("image_file_part_md5s", ["Z" * 32] * 3),
                                              ("image_file_part_md5s", ["0" * 31 + "\n"] * 3),  # a control character
                                              ("image_file_part_md5s", [{"md5": "0" * 32}] * 3),
                                              ("image_file_part_size", 10 ** 30),  # one part, three listed
                                              ("image_file_part_size", -5 * MIB), ("image_file_part_size", "5242880"),
                                              ("image_file_part_size", 0), ("image_file_part_size", True)])
def test_malformed_recorded_part_md5s_are_named(store: Any, tmp_path: Path, field: str, value: Any) -> None:
    publishing, bucket = store
    path = image_file(tmp_path, "app", "1.0", DIGEST, 11 * MIB + 17)
    result = {**promoted_result("app", "1.0", DIGEST, path.name, tested=path, part_size=5 * MIB), field: value}
    (outcome,) = publishing.publish(TestedImage(result, lambda: path))
    assert outcome.state == "failed" and "image_file_part_md5s are not the md5s" in outcome.error, outcome.error
    assert _listing(bucket) == ([], [], None)


def test_a_result_without_checksums_is_still_published(store: Any, tmp_path: Path) -> None:
    publishing, bucket = store
    path = image_file(tmp_path, "app", "1.0", DIGEST, 3 * MIB)
    (outcome,) = publishing.publish(TestedImage(promoted_result("app", "1.0", DIGEST, path.name), lambda: path))
    assert outcome.state == "published", outcome.error
    (entry,) = json.loads(_listing(bucket)[2] or b"{}")["containers"]
    assert entry["md5sum"] == hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("field", "value"), [("image_file_md5", "xyz"), ("image_file_size", "12"),
                                              ("image_file_sha256", "A" * 64)])
def test_a_malformed_recorded_checksum_is_named(store: Any, tmp_path: Path, field: str, value: Any) -> None:
    publishing, bucket = store
    path = image_file(tmp_path, "app", "1.0", DIGEST, MIB)
    result = {**promoted_result("app", "1.0", DIGEST, path.name, tested=path), field: value}
    (outcome,) = publishing.publish(TestedImage(result, lambda: path))
    assert outcome.state == "failed" and f"result.json of app 1.0: {field}" in outcome.error
    assert _listing(bucket) == ([], [], None)


def test_an_oras_target_refuses_a_changed_file_and_tags_nothing(environ: dict[str, str], tmp_path: Path) -> None:
    require_registry()
    prefix = f"tested{uuid.uuid4().hex[:10]}/"
    settings = publish_settings({"targets": [{"name": "sif", "kind": "oras", "address": REGISTRY, "insecure": True,
                                              "prefix": prefix}]})
    path = image_file(tmp_path, "app", "1.0", DIGEST, 2 * MIB)
    result = promoted_result("app", "1.0", DIGEST, path.name, tested=path)
    _change_one_byte(path)
    with Publishing(settings, PROJECT_DIR) as publishing:
        (outcome,) = publishing.publish(TestedImage(result, lambda: path))
    assert outcome.state == "failed" and f"{path.name} changed since it was tested" in outcome.error
    with OCIClient(REGISTRY, insecure=True) as client:
        assert not client.tags(f"{prefix}app")
