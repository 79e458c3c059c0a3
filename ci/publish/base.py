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

from ci.config.publish import KINDS, ObjectStoreTarget, OrasTarget, RegistryTarget
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

    def chunks(self, size: int) -> Iterator[bytes]:
        """The file in chunks of `size`. The first read also computes its md5, sha256 and size, and its
        detached signature: gpg-agent signs that same sha256 at the end (openpgp.py), or, where that
        path is not open, gpg reads the file in its own process meanwhile. A publication thus hashes
        the file while it uploads it, not before; a read that stops early leaves them unknown (and
        stops gpg)."""
        if self.file is None:
            raise PublishError(f"no image file to publish for {self.name}")
        first = not self.hashed
        md5, sha, total = hashlib.md5(), hashlib.sha256(), 0
        signature = self.signing(self.file) if first else None
        complete = False
        # md5 and sha256 on threads of their own (hashlib releases the GIL), each chunk handed on in
        # order: the thread that reads and sends the file does not hash, and the two hashes run side by side
        hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hash")
        pending: list[Future[None]] = []
        try:
            with self.file.open("rb") as handle:
                while chunk := handle.read(size):
                    if first:
                        for future in pending:
                            future.result()
                        pending = [hashing.submit(md5.update, chunk), hashing.submit(sha.update, chunk)]
                        total += len(chunk)
                    yield chunk
            for future in pending:
                future.result()
            complete = True
        finally:
            hashing.shutdown(wait=True)
            if signature is not None and not complete:
                signature.abort()
        if first:
            self.file_signature = signature.finish(sha) if signature is not None else None
            self.md5, self.sha256, self.size = md5.hexdigest(), sha.hexdigest(), total

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
