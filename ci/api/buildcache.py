"""What the build cache janitor keeps: the `spack.lock` of every Spack image the current definitions plan.

It sits in the interface layer because it asks the planner and the Docker engine; the janitor
itself (`ci.buildcache.janitor`) only receives the lock files and stays pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ci.api.pipeline import docker_engine, plan
from ci.buildcache.records import extract_lock, lock_path, record
from ci.config.settings import Settings
from ci.errors import CIError


def spack_cache_locks(settings: Settings, extra: Sequence[Path] = ()) -> tuple[list[Path], list[str]]:
    """The spack.lock of every Spack image the current definitions plan, plus explicit ones.

    A lock recorded earlier (`<state>/spack/locks/`) is used as it is; otherwise it is read from the
    built image in the Docker engine (the runtime stage carries /opt/spack-environment/spack.lock)
    and recorded. Returns the lock files and warnings: an image that is not built here yet has no
    lock, so its entries are protected by age only.
    """
    planned = [image for image in plan(settings).plan.images.values() if image.spec.kind == "spack"]
    found: list[Path] = []
    warnings: list[str] = []
    docker: list[str] | None = None
    for image in planned:
        path = lock_path(settings.state_dir, image.name, image.digest)
        if not path.is_file():
            try:
                if docker is None:
                    docker = list(docker_engine(settings).docker_cmd)
                record(settings.state_dir, image.name, image.digest, extract_lock(docker, image.tag))
            except CIError as exc:
                warnings.append(f"{image.name}: no spack.lock ({exc}); its entries are protected by age only")
                continue
        found.append(path)
    return [*found, *extra], warnings
