"""What a Spack build leaves for later: the concretized `spack.lock` and version, per image digest.

The runtime stage carries `/opt/spack-environment/spack.lock`, so the lock is recorded with the
image itself; after a build it is also copied to `<state>/spack/locks/<name>-<digest12>.spack.lock`
where the janitor finds the locks of the current definitions without pulling images.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.errors import CIError

LOCK_IN_IMAGE = "/opt/spack-environment/spack.lock"


@dataclass(frozen=True)
class SpackRecord:
    name: str
    digest: str
    version: str | None  # the first root's concretized version
    lock: Path


def locks_dir(state_dir: Path) -> Path:
    return state_dir / "spack" / "locks"


def lock_path(state_dir: Path, name: str, digest: str) -> Path:
    return locks_dir(state_dir) / f"{name}-{digest[:12]}.spack.lock"


def concretized_version(lock_text: str) -> str | None:
    try:
        data = json.loads(lock_text)
        first = data["roots"][0]["hash"]
        return str(data["concrete_specs"][first]["version"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def extract_lock(docker: Sequence[str], tag: str) -> str:
    """The image's spack.lock, read with `docker create` + `docker cp` (nothing runs in the image)."""
    created = subprocess.run([*docker, "create", tag, "/bin/true"], capture_output=True, text=True, check=False)
    if created.returncode != 0:
        raise CIError(f"cannot read {LOCK_IN_IMAGE} of {tag}: {created.stderr.strip()[-200:]}")
    container = created.stdout.strip()
    try:
        with tempfile.TemporaryDirectory(prefix="ci-spack-lock-") as scratch:
            target = Path(scratch) / "spack.lock"
            copied = subprocess.run([*docker, "cp", f"{container}:{LOCK_IN_IMAGE}", str(target)],
                                    capture_output=True, text=True, check=False)
            if copied.returncode != 0:
                raise CIError(f"{tag} has no {LOCK_IN_IMAGE} ({copied.stderr.strip()[-200:]})")
            return target.read_text(encoding="utf-8")
    finally:
        subprocess.run([*docker, "rm", "-f", container], capture_output=True, check=False)


def record(state_dir: Path, name: str, digest: str, lock_text: str) -> SpackRecord:
    path = lock_path(state_dir, name, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(lock_text, encoding="utf-8")
    scratch.replace(path)
    return SpackRecord(name=name, digest=digest, version=concretized_version(lock_text), lock=path)


def recorded_locks(state_dir: Path, images: Iterable[tuple[str, str]]) -> tuple[list[Path], list[str]]:
    """The recorded locks of these (name, digest) images, and the names that have none yet."""
    found: list[Path] = []
    missing: list[str] = []
    for name, digest in images:
        path = lock_path(state_dir, name, digest)
        (found.append(path) if path.is_file() else missing.append(name))
    return found, missing
