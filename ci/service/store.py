"""The image store: finished image files under content-addressed names, and nothing else.

A file is named `<image>-<version>-<sha256[:24]>.<suffix>` after its own content: the same bytes
always get the same name (a rebuild that changes nothing adds nothing), and a name cannot be
guessed without the file. A download name is checked against that grammar and must resolve to a
regular file directly inside the store, so no name can leave it.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

FILENAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,200}-[0-9a-f]{24}\.(sif|sqfs|tar)\Z")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Stored:
    filename: str
    sha256: str
    size: int


class ImageStore:
    def __init__(self, root: Path):
        self.root = root

    def put(self, source: Path, image: str, version: str, suffix: str) -> Stored:
        """Hash `source` and move it into the store under its content name (atomic: a reader never sees half)."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        filename = f"{image}-{version}-{sha[:24]}.{suffix}".lower()
        if not FILENAME.match(filename):
            filename = f"image-{sha[:24]}.{suffix}"
        target = self.root / filename
        temporary = self.root / f".incoming-{uuid.uuid4().hex}"
        try:
            os.replace(source, temporary) if _same_device(source, self.root) else _copy(source, temporary)
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
            source.unlink(missing_ok=True)
        return Stored(filename, sha, size)

    def path(self, filename: str) -> Path | None:
        """The file for a download name, or None when the name is not one of ours or not here."""
        if not FILENAME.match(filename):
            return None
        root = self.root.resolve()
        candidate = (root / filename).resolve()
        if candidate.parent != root or not candidate.is_file():
            return None
        return candidate


def _same_device(path: Path, folder: Path) -> bool:
    try:
        return path.stat().st_dev == folder.stat().st_dev
    except OSError:
        return False


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
