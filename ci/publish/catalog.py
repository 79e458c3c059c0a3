"""The catalog of one target: what is published there, written last, read by `verify` and `prune`.

Its shape extends LUMI's `data.json` (whose `verify.py` checks an object store against it), so a
LUMI-style client still reads it: `source_url` and `containers[]` with `name`, `md5sum` and
`description`; we add per entry the sha256, size, version, definition digest, architecture, the
publication time, where the file, its signature and its provenance are, and the pull command.

An entry is added only after its file, signature and provenance are stored, and the catalog is the
last thing a publication writes: a reader never finds an entry whose file is not there yet.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ci.errors import CIError

FORMAT = "containers-ci/catalog/v1"


class CatalogError(CIError):
    """A catalog that cannot be read; the message names the target and the object."""


class Entry(BaseModel):
    """One published image at one target."""

    model_config = ConfigDict(extra="allow")  # a newer tool's fields survive a rewrite by an older one

    name: str
    md5sum: str
    description: str = ""
    sha256: str
    size: int
    version: str
    digest: str  # the definition digest (what the CI identifies an image by)
    arch: str = "amd64"
    published: str  # ISO 8601 UTC
    file: str  # the object key, or the registry reference `repo@sha256:...`
    manifest: str | None = None  # registries: the digest of the published manifest
    tags: list[str] = Field(default_factory=list)
    signature: str | None = None
    provenance: str | None = None
    provenance_signature: str | None = None
    pull: str = ""

    @property
    def digest12(self) -> str:
        return self.digest[:12]


class Catalog(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: str = FORMAT
    source_url: str = ""
    public_key: str | None = None  # where the key that signs every entry is, beside the catalog
    updated: str = ""
    containers: list[Entry] = Field(default_factory=list)

    def find(self, name: str, arch: str, digest: str) -> Entry | None:
        return next((e for e in self.containers if e.name == name and e.arch == arch and e.digest == digest), None)

    def with_entry(self, entry: Entry) -> Catalog:
        """This catalog with `entry` replacing an earlier one of the same image and digest."""
        kept = [e for e in self.containers if (e.name, e.arch, e.digest) != (entry.name, entry.arch, entry.digest)]
        return self.model_copy(update={"containers": [*kept, entry]})

    def without(self, entries: Iterable[Entry]) -> Catalog:
        gone = {(e.name, e.arch, e.digest) for e in entries}
        return self.model_copy(update={"containers": [e for e in self.containers
                                                      if (e.name, e.arch, e.digest) not in gone]})

    def to_bytes(self) -> bytes:
        ordered = sorted(self.containers, key=lambda e: (e.name, e.arch, e.published, e.digest))
        data = self.model_copy(update={"containers": ordered}).model_dump(mode="json", exclude_none=True)
        return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def parse(data: bytes, where: str) -> Catalog:
    """A stored catalog; a damaged one is a clear error (verify reports it, publish refuses to overwrite it)."""
    try:
        raw: Any = json.loads(data)
        return Catalog.model_validate(raw)  # a plain LUMI data.json lacks our fields: refused, never overwritten
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise CatalogError(f"{where} is not a readable catalog ({first}); repair or remove it") from None
