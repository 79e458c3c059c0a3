"""The `object-store` kind: the HPC image file in an S3-compatible store (Allas, AWS S3, Ceph RGW, moto).

Layout under the target's bucket and prefix, LUMI's shape plus what verifying needs:

```
<prefix><name>/<name>-<version>-<digest12>.<sif|sqfs>        the image file
<prefix><name>/<...>.asc                                      its detached OpenPGP signature
<prefix><name>/<...>.provenance.json (+ .asc)                 its provenance record, signed
<prefix>data.json (+ data.json.asc)                           the catalog, written last, signed
<prefix>pgp-public.asc                                        the key every signature checks against
```

Every upload carries Content-MD5, so the store itself refuses bytes that changed on the way, and
the object's metadata holds its sha256. Files above `multipart_threshold_mb` go up in parts of
`part_size_mb`; an upload cut
off half-way stays an unfinished multipart upload (invisible to readers), and the next attempt
reuses the parts already stored whose ETag is the md5 of our bytes for that part, uploads the rest,
and completes it.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ci.config.publish import MIB, ObjectStoreTarget, part_size_for
from ci.publish.base import ChangedSinceTested, Prepared, Publisher, PublishError, credential, kind
from ci.publish.catalog import Catalog, CatalogError, Entry, parse
from ci.publish.signing import Signer

PUBLIC_KEY = "pgp-public.asc"
CHUNK = MIB


def _settle(futures: list[Future[None]]) -> None:
    """Wait for every write, then raise the first failure."""
    wait(futures)
    for future in futures:
        future.result()


def _code(exc: ClientError | BotoCoreError) -> str | None:
    """The S3 error code of a failed call (None for a failure below HTTP: no answer, a timeout)."""
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


@kind("object-store")
class ObjectStorePublisher(Publisher):
    """One bucket and prefix of an S3-compatible store; credentials from the target's variables."""

    target: ObjectStoreTarget

    def __init__(self, target: ObjectStoreTarget, environ: Any):
        super().__init__(target, environ)
        access = credential(environ, target.access_key_env, target.name, "access key")
        secret = credential(environ, target.secret_key_env, target.name, "secret key")
        # Content-MD5 is the checksum every S3-compatible store verifies (Ceph RGW included), and it is a
        # signed header, so the body cannot be swapped on the way; the SigV4 payload hash botocore would
        # add over plain HTTP (a sha256 of every part) and its CRC32 are a third and fourth pass over
        # the bytes that add no guarantee: both off.
        self.client = boto3.client(
            "s3", endpoint_url=target.endpoint, region_name=target.region or "us-east-1",
            aws_access_key_id=access, aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path", "payload_signing_enabled": False},
                          retries={"max_attempts": 5, "mode": "standard"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", connect_timeout=15, read_timeout=120))
        self.bucket = target.bucket
        self.prefix = target.prefix
        self.parts_reused = 0
        self._bucket_checked = False
        self._count = threading.Lock()
        # small writes at once (boto3 clients are thread-safe); a call on it never waits for another
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="s3-small")

    # ---- helpers -------------------------------------------------------------------------------

    def _call(self, what: str, function: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return function(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed(what, exc) from None

    def _failed(self, what: str, exc: ClientError | BotoCoreError) -> PublishError:
        """One line naming the target and what failed (boto's own message may quote the request)."""
        if isinstance(exc, ClientError):
            return PublishError(f"target {self.name}: {what} failed ({_code(exc) or 'error'}) at bucket {self.bucket}")
        return PublishError(f"target {self.name}: {what} failed ({type(exc).__name__}); is "
                            f"{self.target.endpoint or 'the S3 endpoint'} reachable?")

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise PublishError(f"target {self.name}: HEAD {key} failed") from None

    def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            if not self.target.create_bucket:
                raise PublishError(f"target {self.name}: bucket {self.bucket} does not exist or is not ours; "
                                   "create it (or set create_bucket: true for a local store)") from None
            self._call("creating the bucket", self.client.create_bucket, Bucket=self.bucket)
        except BotoCoreError as exc:
            raise PublishError(f"target {self.name}: {self.target.endpoint or 'S3'} did not answer "
                               f"({type(exc).__name__})") from None
        self._bucket_checked = True

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        md5 = hashlib.md5(data).hexdigest()
        sha = hashlib.sha256(data).hexdigest()
        self._call(f"uploading {key}", self.client.put_object, Bucket=self.bucket, Key=key, Body=data,
                   ContentMD5=_b64(md5), ContentType=content_type, Metadata={"sha256": sha, "md5": md5})
        self._count_sent(len(data))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise PublishError(f"target {self.name}: reading {key} failed") from None

    def put_file(self, key: str, item: Prepared) -> None:
        """Upload the image file in one read: one PUT when small, else a resumable multipart upload.

        Each request carries Content-MD5 (the store refuses bytes that changed on the way); after a
        multipart upload, the object's ETag must be the md5 of the parts' md5s, so the store holds
        exactly the parts that were sent.
        """
        assert item.file is not None
        size = item.size if item.hashed else item.file.stat().st_size
        threshold = self.target.multipart_threshold_mb * MIB
        if size <= threshold:
            self._put_single(key, item, threshold)
            return
        part_size = part_size_for(size, self.target.part_size_mb)
        try:
            self._put_parts(key, item, size, part_size)
        except ChangedSinceTested:
            self._abort_uploads(key)  # the parts of bytes that were not tested: no retry is to resume them
            raise

    def _put_single(self, key: str, item: Prepared, whole: int) -> None:
        """One PUT. With the md5 known (recorded by the site, or read by an earlier target) the file
        streams at once under that Content-MD5, and the store refuses other bytes; the sha256 of
        what was sent must then be the recorded one, or the object is deleted again. Without
        (a result promoted before checksums were recorded) the file is read and hashed first."""
        recorded = item.recorded
        md5 = item.md5 if item.hashed else recorded.md5 if recorded is not None else ""
        if not md5:
            data = b"".join(item.chunks(whole))  # one read: the file is at most `whole` bytes
            self._call(f"uploading {key}", self.client.put_object, Bucket=self.bucket, Key=key, Body=data,
                       ContentMD5=_b64(item.md5), Metadata={"sha256": item.sha256, "md5": item.md5})
            self._count_sent(len(data))
            return
        assert recorded is not None or item.hashed
        sha = item.sha256 if item.hashed else recorded.sha256 if recorded is not None else ""
        body = item.stream()
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentLength=body.size,
                                   ContentMD5=_b64(md5), Metadata={"sha256": sha, "md5": md5})
        except (ClientError, BotoCoreError) as exc:
            body.abort()
            if _code(exc) in ("BadDigest", "InvalidDigest"):
                raise item.changed("the store computed another md5 than the recorded one") from None
            raise self._failed(f"uploading {key}", exc) from None
        except BaseException:
            body.abort()
            raise
        try:
            body.finish()
        except ChangedSinceTested:
            self._call(f"deleting {key}", self.client.delete_object, Bucket=self.bucket, Key=key)
            raise
        self._count_sent(body.size)

    def _abort_uploads(self, key: str) -> None:
        listing = self._call("listing unfinished uploads", self.client.list_multipart_uploads,
                             Bucket=self.bucket, Prefix=key)
        for upload in listing.get("Uploads", []):
            if upload.get("Key") == key:
                self._call("aborting the upload", self.client.abort_multipart_upload, Bucket=self.bucket, Key=key,
                           UploadId=upload["UploadId"])

    def _put_parts(self, key: str, item: Prepared, size: int, part_size: int) -> None:
        """A resumable multipart upload, each part under its own Content-MD5."""
        parts: list[dict[str, Any]] = []

        crc32 = self.target.part_checksum == "crc32"
        recorded = item.recorded
        tested_md5s = recorded.part_md5s_for(part_size) if recorded is not None else None

        def upload(number: int, chunk: bytes) -> int:
            """One part: its md5 (as the site recorded it for the tested file, else computed here, off the
            reading thread), then the upload unless an earlier attempt stored the same bytes; returns the
            bytes sent."""
            part_md5 = tested_md5s[number - 1] if tested_md5s is not None else hashlib.md5(chunk).hexdigest()
            checksum = {"ChecksumCRC32": base64.b64encode(zlib.crc32(chunk).to_bytes(4, "big")).decode()} \
                if crc32 else {}
            parts.append({"PartNumber": number, "ETag": f'"{part_md5}"', **checksum})
            upload_id, stored = found.result()
            if stored.get(number) == part_md5:
                return 0
            try:
                self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                        Body=chunk, ContentMD5=_b64(part_md5), **checksum)
            except (ClientError, BotoCoreError) as exc:
                if tested_md5s is not None and _code(exc) in ("BadDigest", "InvalidDigest"):
                    raise item.changed(f"the store computed another md5 for part {number} than the "
                                       "recorded one") from None
                raise self._failed(f"uploading part {number} of {key}", exc) from None
            return len(chunk)

        # Parts go up `uploads` at a time (the file is still read once, in order): the store works on
        # one part while the next is read, hashed and sent. At most `uploads` parts are in memory.
        with ThreadPoolExecutor(max_workers=self.target.uploads + 1, thread_name_prefix="s3-part") as pool:
            # the unfinished upload to resume (or a new one) is looked up while the first part is read
            found = pool.submit(self._resumable, key, size, part_size)
            running: list[Future[int]] = []
            for number, chunk in enumerate(item.chunks(part_size), start=1):
                if len(running) >= self.target.uploads:
                    wait(running, return_when=FIRST_COMPLETED)
                    for future in [f for f in running if f.done()]:
                        self._count_part(future.result())
                        running.remove(future)
                running.append(pool.submit(upload, number, chunk))
            for future in running:
                self._count_part(future.result())  # the first failed part's error, after the others stopped
        upload_id = found.result()[0]
        parts.sort(key=lambda part: int(part["PartNumber"]))
        try:
            done = self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                         MultipartUpload={"Parts": parts})
        except (ClientError, BotoCoreError) as exc:
            # S3 completes only parts whose ETag is the one named: a stored part is not the recorded bytes
            if tested_md5s is not None and _code(exc) == "InvalidPart":
                raise item.changed("a part the store holds is not the recorded one") from None
            raise self._failed(f"completing {key}", exc) from None
        expected = hashlib.md5(b"".join(bytes.fromhex(p["ETag"].strip('"')) for p in parts)).hexdigest()
        if str(done.get("ETag", "")).strip('"') != f"{expected}-{len(parts)}":
            # a store that does not check Content-MD5 took other bytes: the object goes again, unlisted
            self._call(f"deleting {key}", self.client.delete_object, Bucket=self.bucket, Key=key)
            if tested_md5s is not None:
                raise item.changed("the store's ETag is not that of the recorded parts' md5s")
            raise PublishError(f"target {self.name}: the store's ETag of {key} is not that of the parts sent")

    def _count_part(self, sent: int) -> None:
        if sent:
            self._count_sent(sent)
        else:
            self.parts_reused += 1

    def _count_sent(self, sent: int) -> None:
        with self._count:
            self.bytes_sent += sent

    def _resumable(self, key: str, size: int, part_size: int) -> tuple[str, dict[int, str]]:
        """An unfinished upload of `key` whose stored parts match our bytes (or a new one); stale ones aborted."""
        listing = self._call("listing unfinished uploads", self.client.list_multipart_uploads,
                             Bucket=self.bucket, Prefix=key)
        uploads = sorted((u for u in listing.get("Uploads", []) if u.get("Key") == key),
                         key=lambda u: u.get("Initiated"), reverse=True)
        chosen: tuple[str, dict[int, str]] | None = None
        for upload in uploads:
            upload_id = upload["UploadId"]
            if chosen is None:
                parts = self._call("listing stored parts", self.client.list_parts, Bucket=self.bucket, Key=key,
                                   UploadId=upload_id).get("Parts", [])
                stored = {int(p["PartNumber"]): str(p["ETag"]).strip('"') for p in parts
                          if int(p.get("Size", 0)) == min(part_size, size - part_size * (int(p["PartNumber"]) - 1))}
                chosen = (upload_id, stored)
                continue
            self._call("aborting a stale upload", self.client.abort_multipart_upload, Bucket=self.bucket, Key=key,
                       UploadId=upload_id)
        if chosen is not None:
            return chosen
        checksum = {"ChecksumAlgorithm": "CRC32"} if self.target.part_checksum == "crc32" else {}
        created = self._call(f"starting the upload of {key}", self.client.create_multipart_upload,
                             Bucket=self.bucket, Key=key, **checksum)
        return str(created["UploadId"]), {}

    def objects(self) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"target {self.name}: listing bucket {self.bucket} failed ({type(exc).__name__})") \
                from None

    # ---- the interface -------------------------------------------------------------------------

    def read_catalog(self) -> Catalog:
        self._ensure_bucket()
        data = self.get_bytes(self.key(self.target.catalog))
        if data is None:
            return Catalog(source_url=self.target.public_url)
        return parse(data, f"s3://{self.bucket}/{self.key(self.target.catalog)}")

    def write_catalog(self, catalog: Catalog, signer: Signer | None) -> None:
        catalog = catalog.model_copy(update={"source_url": self.target.public_url,
                                             "public_key": PUBLIC_KEY if signer else None})
        data = catalog.to_bytes()
        if signer is not None:
            # the key and the signature first (the key written while gpg signs): a reader never sees a
            # catalog without its signature beside it
            key = [self._pool.submit(self.put_bytes, self.key(PUBLIC_KEY), signer.public_key(), "application/pgp-keys")]
            try:
                signature = signer.sign_bytes(data)
            finally:
                _settle(key)
            self.put_bytes(self.key(self.target.catalog + ".asc"), signature, "application/pgp-signature")
        self.put_bytes(self.key(self.target.catalog), data, "application/json")

    def present(self, entry: Entry) -> bool:
        head = self._head(self.key(entry.file))
        return head is not None and int(head.get("ContentLength", -1)) == entry.size \
            and (head.get("Metadata") or {}).get("sha256") in (None, entry.sha256)

    def publish(self, item: Prepared) -> Entry:
        if item.file is None:
            raise PublishError(f"target {self.name}: no image file to publish for {item.name}")
        self._ensure_bucket()
        folder = f"{item.name}/"
        file_key = folder + item.file_name
        self.put_file(self.key(file_key), item)
        entry = Entry(name=item.name, md5sum=item.md5, sha256=item.sha256, size=item.size, version=item.version,
                      digest=item.digest, arch=item.arch, published=item.published, file=file_key,
                      description=self.target.descriptions.get(item.name, f"{item.name} {item.version} ({item.arch})"),
                      pull=f"curl -fLO {self.target.public_url}{file_key}")
        provenance = item.provenance({"name": item.file_name, "sha256": item.sha256, "size": item.size,
                                      "location": f"{self.target.public_url}{file_key}"})
        entry.provenance = file_key + ".provenance.json"
        # the objects beside the file are independent of each other: written at once, the provenance
        # signed (gpg) meanwhile; the catalog that lists them comes after all of them
        writes = [self._pool.submit(self.put_bytes, self.key(entry.provenance), provenance, "application/json")]
        if item.file_signature is not None:
            entry.signature = file_key + ".asc"
            writes.append(self._pool.submit(self.put_bytes, self.key(entry.signature), item.file_signature,
                                            "application/pgp-signature"))
        try:
            provenance_signature = item.sign(provenance)
            if provenance_signature is not None:
                entry.provenance_signature = entry.provenance + ".asc"
                writes.append(self._pool.submit(self.put_bytes, self.key(entry.provenance_signature),
                                                provenance_signature, "application/pgp-signature"))
        finally:
            _settle(writes)
        return entry

    def problems(self, catalog: Catalog, valid: Callable[[Path | bytes, bytes], bool] | None) -> list[str]:
        stored = {obj["Key"][len(self.prefix):]: obj for obj in self.objects()}
        expected = {self.target.catalog}
        found: list[str] = []
        if valid is not None:
            expected |= {self.target.catalog + ".asc", PUBLIC_KEY}
        for entry in catalog.containers:
            listed = [entry.file, entry.signature, entry.provenance, entry.provenance_signature]
            expected |= {name for name in listed if name}
            if entry.file not in stored:
                found.append(f"missing: {entry.file} (listed for {entry.name} {entry.version})")
                continue
            found += self._check_file(entry, stored, valid)
        for name in sorted(set(stored) - expected):
            found.append(f"not in the catalog: {name}")
        return found

    def _check_file(self, entry: Entry, stored: dict[str, Any], valid: Callable[[Path | bytes, bytes], bool] | None
                    ) -> list[str]:
        found: list[str] = []
        with tempfile.NamedTemporaryFile(prefix="ci-verify-") as handle:
            md5, sha = hashlib.md5(), hashlib.sha256()
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self.key(entry.file))["Body"]
                for chunk in body.iter_chunks(CHUNK):
                    md5.update(chunk)
                    sha.update(chunk)
                    handle.write(chunk)
            except (ClientError, BotoCoreError):
                return [f"unreadable: {entry.file}"]
            handle.flush()
            size = handle.tell()
            if size != entry.size or md5.hexdigest() != entry.md5sum or sha.hexdigest() != entry.sha256:
                found.append(f"checksum mismatch: {entry.file} (sha256 {sha.hexdigest()[:16]}…, size {size}; "
                             f"the catalog lists {entry.sha256[:16]}…, size {entry.size})")
            if valid is not None:
                found += self._check_signature(entry.file, entry.signature, Path(handle.name), stored, valid)
        if entry.provenance:
            provenance = self.get_bytes(self.key(entry.provenance))
            if provenance is None:
                found.append(f"missing: {entry.provenance} (provenance of {entry.file})")
            elif valid is not None:
                found += self._check_signature(entry.provenance, entry.provenance_signature, provenance, stored, valid)
        return found

    def _check_signature(self, name: str, signature_name: str | None, content: Path | bytes,
                         stored: dict[str, Any], valid: Callable[[Path | bytes, bytes], bool]) -> list[str]:
        if not signature_name:
            return [f"unsigned: {name} (the catalog lists no signature)"]
        if signature_name not in stored:
            return [f"missing: {signature_name} (signature of {name})"]
        signature = self.get_bytes(self.key(signature_name)) or b""
        return [] if valid(content, signature) else [f"bad signature: {signature_name} does not sign {name}"]

    def remove(self, entry: Entry) -> None:
        for name in (entry.file, entry.signature, entry.provenance, entry.provenance_signature):
            if name:
                self._call(f"deleting {name}", self.client.delete_object, Bucket=self.bucket, Key=self.key(name))

    def catalog_problems(self, valid: Callable[[Path | bytes, bytes], bool]) -> list[str]:
        data = self.get_bytes(self.key(self.target.catalog))
        signature = self.get_bytes(self.key(self.target.catalog + ".asc"))
        if data is None:
            return []
        if signature is None:
            return [f"missing: {self.target.catalog}.asc (signature of the catalog)"]
        return [] if valid(data, signature) else [f"bad signature: {self.target.catalog}.asc does not sign "
                                                  f"{self.target.catalog}"]

    def public_key(self) -> bytes | None:
        return self.get_bytes(self.key(PUBLIC_KEY))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()


__all__ = ["PUBLIC_KEY", "CatalogError", "ObjectStorePublisher"]
