"""The publisher interface, the registry of target kinds, and what a publisher is handed.

A kind is one module (`registry.py`, `oras.py`, `object_store.py`) holding one `Publisher` subclass
registered with `@kind("name")`. The pipeline and the tasks never name a kind: they call
`ci.publish.publishing`, which opens each configured target through `open_publisher`, importing
the kind's module only then (boto3 is loaded only where an object store is configured).

A publisher does four things for its target: store one image (`publish`), read and write the
target's catalog, check the target against its catalog (`problems`), and remove an entry
(`remove`, for prune). Everything that is the same for every kind (which images, already
published or not, signing, the order "files first, catalog last") is in `publishing.py`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ci.config.publish import KINDS, ObjectStoreTarget, OrasTarget, RegistryTarget, parts_in
from ci.errors import CIError
from ci.publish.catalog import Catalog, Entry
from ci.publish.signing import FileSignature, Signer

AnyTarget = RegistryTarget | OrasTarget | ObjectStoreTarget
MODULES = {"registry": "ci.publish.registry", "oras": "ci.publish.oras", "object-store": "ci.publish.object_store"}
_KINDS: dict[str, type[Publisher]] = {}


class PublishError(CIError):
    """Publishing to one target failed; the message names the target and what to check."""


@dataclass(frozen=True)
class SourceImage:
    """The tested OCI image in the site's registry, as the build side reaches it."""

    address: str
    repository: str
    tag: str
    insecure: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)


RECORDED = ("image_file_size", "image_file_md5", "image_file_sha256")  # what convert records, promote files


class ChangedSinceTested(PublishError):
    """The image file's bytes are not those the site tested (result.json's checksums)."""


@dataclass(frozen=True)
class Recorded:
    """The image file's checksums as the site recorded them when it made (and then tested) the file."""

    size: int
    md5: str
    sha256: str
    part_size: int = 0  # the parts whose md5s were recorded (0: none were)
    part_md5s: tuple[str, ...] = ()

    def part_md5s_for(self, part_size: int) -> tuple[str, ...] | None:
        """The recorded md5 of every part of `part_size` bytes, or None where another size was recorded."""
        return self.part_md5s if self.part_md5s and part_size == self.part_size else None


def _is_hex(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def recorded_checksums(result: Mapping[str, Any]) -> Recorded | None:
    """result.json's checksums of the image file; None for a result promoted before they were recorded."""
    if not any(key in result for key in RECORDED):
        return None
    size, md5, sha = (result.get(key) for key in RECORDED)
    where = f"result.json of {result.get('name')} {result.get('version')}"
    if not _is_count(size):
        raise PublishError(f"{where}: image_file_size is not a byte count; promote the image again")
    for key, value, length in (("image_file_md5", md5, 32), ("image_file_sha256", sha, 64)):
        if not _is_hex(value, length):
            raise PublishError(f"{where}: {key} is not a {length}-digit lowercase hex checksum; "
                               "promote the image again")
    assert isinstance(size, int)
    part_size, parts = result.get("image_file_part_size"), result.get("image_file_part_md5s")
    if part_size is None and parts is None:
        return Recorded(size, str(md5), str(sha))
    if not _is_count(part_size) or not part_size or not isinstance(parts, list) \
            or len(parts) != parts_in(size, part_size) or not all(_is_hex(part, 32) for part in parts):
        raise PublishError(f"{where}: image_file_part_size and image_file_part_md5s are not the md5s of the "
                           "file's parts (one 32-digit lowercase hex checksum per part); promote the image again")
    return Recorded(size, str(md5), str(sha), int(part_size), tuple(str(part) for part in parts))


class _FirstRead:
    """The first read of an image file: its sha256 (and its md5 unless recorded) on threads of their own
    (hashlib releases the GIL; each chunk is handed on in order, so the thread that reads and sends the
    file does not hash), its signature started; `finish` compares with what was recorded."""

    def __init__(self, item: Prepared):
        self.item = item
        self.recorded = item.recorded
        self.md5 = hashlib.md5() if self.recorded is None else None
        self.sha = hashlib.sha256()
        self.total = 0
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hash")
        self._pending: list[Future[None]] = []
        assert item.file is not None
        self.signature = item.signing(item.file)

    def feed(self, chunk: bytes | memoryview) -> None:
        for future in self._pending:
            future.result()
        self._pending = [self._pool.submit(self.sha.update, chunk)]
        if self.md5 is not None:
            self._pending.append(self._pool.submit(self.md5.update, chunk))
        self.total += len(chunk)

    def finish(self) -> None:
        """The hashes complete; the bytes read must be the tested ones before anything is signed or listed."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
        item, sha = self.item, self.sha.hexdigest()
        if self.recorded is not None and (self.total != self.recorded.size or sha != self.recorded.sha256):
            self.abort()
            raise item.changed(f"read {self.total} bytes with sha256 {sha[:16]}…, result.json records "
                               f"{self.recorded.size} bytes with sha256 {self.recorded.sha256[:16]}…")
        item.file_signature = self.signature.finish(self.sha) if self.signature is not None else None
        item.md5 = self.md5.hexdigest() if self.md5 is not None else self.recorded.md5 if self.recorded else ""
        item.sha256, item.size = sha, self.total

    def abort(self) -> None:
        self._pool.shutdown(wait=True)
        if self.signature is not None:
            self.signature.abort()


class FileStream:
    """The image file as a request body (read, seek, tell): read in large blocks, each handed to the
    hashing threads on its first read (a retry's rewind is not hashed twice). `finish` after the
    request: its checksums, compared with the recorded ones."""

    BLOCK = 4 * 1024 * 1024

    def __init__(self, item: Prepared):
        assert item.file is not None
        self._first = _FirstRead(item) if not item.hashed else None
        self._handle = item.file.open("rb")
        self._block = memoryview(b"")
        self._block_start = 0  # the file offset of _block
        self._position = 0
        self._hashed = 0  # bytes [0, _hashed) went to the hashes
        self.size = os.fstat(self._handle.fileno()).st_size

    def read(self, size: int = -1) -> bytes:
        offset = self._position - self._block_start
        if offset < 0 or offset >= len(self._block):
            self._handle.seek(self._position)
            self._block_start, self._block = self._position, memoryview(self._handle.read(self.BLOCK))
            end = self._block_start + len(self._block)
            if self._first is not None and end > self._hashed >= self._block_start:
                self._first.feed(self._block[self._hashed - self._block_start:])
                self._hashed = end
            offset = 0
        data = bytes(self._block[offset:] if size < 0 else self._block[offset:offset + size])
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            offset += self.size
        elif whence == os.SEEK_CUR:
            offset += self._position
        self._position = offset
        return offset

    def tell(self) -> int:
        return self._position

    def finish(self) -> None:
        self._handle.close()
        if self._first is not None:
            self._first.finish()

    def abort(self) -> None:
        self._handle.close()
        if self._first is not None:
            self._first.abort()


@dataclass
class Prepared:
    """One tested image ready to publish: its promoted result, its file's checksums, a signer."""

    result: Mapping[str, Any]
    file: Path | None  # the local HPC image file (None when no target of this run needs it)
    file_name: str
    md5: str = ""
    sha256: str = ""
    size: int = 0
    file_signature: bytes | None = None
    source: SourceImage | None = None
    sign: Callable[[bytes], bytes | None] = lambda _data: None
    provenance: Callable[[Mapping[str, Any]], bytes] = lambda _subject: b"{}"
    published: str = ""
    signing: Callable[[Path], FileSignature | None] = lambda _path: None  # started at the first read

    @property
    def hashed(self) -> bool:
        """The file's checksums and signature are known (an earlier target of this run read it)."""
        return bool(self.sha256)

    @property
    def recorded(self) -> Recorded | None:
        """The checksums the site recorded for the file it tested (None: promoted before they were recorded)."""
        return recorded_checksums(self.result)

    def changed(self, detail: str) -> ChangedSinceTested:
        """The error for a file whose bytes are not the tested ones (nothing of it is listed)."""
        return ChangedSinceTested(f"{self.file_name} changed since it was tested ({detail}); nothing was "
                                  "published: restore the tested file or build, test and promote it again")

    def check_size(self) -> None:
        """A file whose size is not the recorded one is refused before a byte is sent."""
        recorded = self.recorded
        if self.file is None:
            raise PublishError(f"no image file to publish for {self.name}")
        if recorded is not None and not self.hashed:
            size = self.file.stat().st_size
            if size != recorded.size:
                raise self.changed(f"{size} bytes, result.json records {recorded.size}")

    def stream(self) -> FileStream:
        """The file as a request body that hashes what is read (the first time); `finish()` it after the request."""
        self.check_size()
        return FileStream(self)

    def chunks(self, size: int) -> Iterator[bytes]:
        """The file in chunks of `size`. The first read also computes its sha256 (and its md5 unless
        the site recorded it) and size, and its detached signature: gpg-agent signs that same sha256
        at the end (openpgp.py), or, where that path is not open, gpg reads the file in its own
        process meanwhile. A publication thus hashes the file while it uploads it, not before; a read
        that stops early leaves them unknown (and stops gpg). With recorded checksums, the bytes read
        must be the tested ones: else the iteration fails after the last chunk, before its consumer
        completes the upload."""
        self.check_size()
        assert self.file is not None
        first = _FirstRead(self) if not self.hashed else None
        complete = False
        try:
            with self.file.open("rb") as handle:
                while chunk := handle.read(size):
                    if first is not None:
                        first.feed(chunk)
                    yield chunk
            complete = True
        finally:
            if first is not None and not complete:
                first.abort()
        if first is not None:
            first.finish()

    @property
    def name(self) -> str:
        return str(self.result["name"])

    @property
    def arch(self) -> str:
        return str(self.result.get("arch") or "amd64")

    @property
    def version(self) -> str:
        return str(self.result["version"])

    @property
    def digest(self) -> str:
        return str(self.result["digest"])

    @property
    def digest12(self) -> str:
        return self.digest[:12]


class Publisher(ABC):
    """One configured target of one kind."""

    kind_name: ClassVar[str] = ""
    needs_file: ClassVar[bool] = True  # the HPC image file (False: the OCI image in the site's registry)

    def __init__(self, target: Any, environ: Mapping[str, str]):
        self.target = target
        self.environ = environ
        self.bytes_sent = 0

    @property
    def name(self) -> str:
        return str(self.target.name)

    @abstractmethod
    def read_catalog(self) -> Catalog:
        """The target's catalog (an empty one when nothing was published there yet)."""

    @abstractmethod
    def write_catalog(self, catalog: Catalog, signer: Signer | None) -> None:
        """Store the catalog, signed by `signer`, with its public key beside it: the last write of a publication."""

    @abstractmethod
    def present(self, entry: Entry) -> bool:
        """Is what `entry` lists still there (a cheap check: a HEAD, not a download)?"""

    @abstractmethod
    def publish(self, item: Prepared) -> Entry:
        """Store one image with its signature and provenance; return its catalog entry (not written yet)."""

    @abstractmethod
    def problems(self, catalog: Catalog, valid: Callable[[Path | bytes, bytes], bool] | None) -> list[str]:
        """Everything wrong at the target against `catalog`, one line each (`valid` checks a signature)."""

    @abstractmethod
    def remove(self, entry: Entry) -> None:
        """Delete what `entry` lists (after the catalog stopped listing it)."""

    @abstractmethod
    def public_key(self) -> bytes | None:
        """The public key published beside the catalog, if any."""

    @abstractmethod
    def catalog_problems(self, valid: Callable[[Path | bytes, bytes], bool]) -> list[str]:
        """Is the catalog's own signature there and good?"""

    def close(self) -> None:  # noqa: B027 - most kinds hold a connection, not all need closing
        """Release connections."""


def kind(name: str) -> Callable[[type[Publisher]], type[Publisher]]:
    """Register a publisher class under its kind name (the `kind:` of a target)."""
    if name not in KINDS:
        raise ValueError(f"kind {name!r} is not declared in ci.config.publish.KINDS")

    def register(cls: type[Publisher]) -> type[Publisher]:
        cls.kind_name = name
        _KINDS[name] = cls
        return cls

    return register


def publisher_class(name: str) -> type[Publisher]:
    if name not in _KINDS:
        importlib.import_module(MODULES[name])
    return _KINDS[name]


def open_publisher(target: AnyTarget, environ: Mapping[str, str] | None = None) -> Publisher:
    return publisher_class(target.kind)(target, os.environ if environ is None else environ)


def credential(environ: Mapping[str, str], variable: str | None, target: str, what: str) -> str | None:
    """A credential from the environment; a configured but empty variable is an error naming it (not the value)."""
    if variable is None:
        return None
    value = environ.get(variable)
    if not value:
        raise PublishError(f"target {target}: the {what} variable {variable} is not set (ci.publish.targets)")
    return value
