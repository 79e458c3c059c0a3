"""Builds for another architecture on this machine: BuildKit `--platform linux/arm64` and QEMU.

`inv local.up` registers Debian's qemu-user-static with binfmt_misc (ci.local.QEMU); this module
makes the tiny arm64 base image (`busybox.Dockerfile`) that `arm64/` definitions start FROM
locally, where no registry can be pulled from. Its tag carries the Debian suite, and the image is
made only when missing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ci.docker.engine import BuildRequest, DockerEngine
from ci.errors import CIError

DOCKERFILE = Path(__file__).resolve().parent / "busybox.Dockerfile"
ARM64_BASE = "containers-ci/busybox:arm64"


def ensure_foreign_base(engine: DockerEngine, *, tag: str = ARM64_BASE, debian_arch: str = "arm64",
                        platform: str = "linux/arm64", base_image: str = "containers-ci/debian:bookworm",
                        force: bool = False, can_emulate: bool = True) -> str:
    """Create the busybox base image of `platform` unless it exists.

    `can_emulate`: whether this machine runs `platform`'s programs (ci.local.binfmt_ready for arm64).
    """
    if not force and engine.image_exists(tag):
        return f"{tag} is present"
    if not engine.image_exists(base_image):
        raise CIError(f"the base image {base_image} is missing; run `inv local.base-image` first")
    if not can_emulate:
        raise CIError("arm64 programs cannot run here: binfmt_misc has no enabled qemu-aarch64 handler; "
                      "run `inv local.up` as root (it installs qemu-user-static and binfmt-support)")
    with tempfile.TemporaryDirectory(prefix="ci-foreign-base-") as scratch:
        context = Path(scratch)
        (context / "Dockerfile").write_text(DOCKERFILE.read_text(encoding="utf-8"), encoding="utf-8")
        request = BuildRequest(name=f"busybox-{debian_arch}", tag=tag, context=context,
                               dockerfile=context / "Dockerfile", build_args={"DEBIAN_ARCH": debian_arch},
                               labels={}, platform=platform)
        with (context / "build.log").open("w", encoding="utf-8") as log:
            try:
                engine.build(request, log)
            except CIError as exc:
                tail = "".join((context / "build.log").read_text(errors="replace").splitlines(True)[-10:])
                raise CIError(f"{exc}\n{tail}") from None
    return f"{tag} created ({platform}, busybox from Debian)"
