"""Every image this machine makes for itself before a local run: the Debian base, the stand-in Spack
builder (only when ci.spack.builder_image names it) and the arm64 busybox base (through QEMU).

One function, so that `inv local.up` and `inv build-all` on the local profile prepare the same things.
"""

from __future__ import annotations

from ci.config.settings import Settings
from ci.docker.engine import DockerEngine
from ci.local import base_image, foreign_base, spack_builder


def ensure_local_images(settings: Settings, engine: DockerEngine, *, arm64: bool, can_emulate: bool) -> list[str]:
    """Make what is missing; one line per image saying what it is and whether it was made."""
    lines = ["base image: " + base_image.ensure_base_image(engine, settings.base_image)]
    if settings.spack.builder_image == spack_builder.STANDIN_TAG:
        made = spack_builder.ensure_standin_builder(engine, settings.spack.builder_image, settings.base_image.tag)
        lines.append("spack builder: " + made)
    if arm64:
        lines.append("arm64 base image: " + foreign_base.ensure_foreign_base(engine, can_emulate=can_emulate))
    return lines
