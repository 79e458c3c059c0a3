"""`inv local.*`: this machine as a site. `local.up` installs and starts the local services; the other
tasks make the images this machine builds for itself (the Debian base, the arm64 base, the stand-in
Spack builder).
"""

from __future__ import annotations

from typing import Any

from invoke.collection import Collection
from invoke.tasks import task

from ci.cli.common import explained, settings_from, stderr, stdout
from ci.cli.help import COMMON_HELP


@task(help={"force": "Recreate the image even if it exists.", "profile": COMMON_HELP["profile"]})
@explained
def base_image_task(c, force=False, profile=None):  # type: ignore[no-untyped-def]
    """Create the local Debian base image (debootstrap, then docker import); a no-op when present.

    No registry can be reached from the build machines this targets, so definitions start FROM
    this image (ci.base_image.tag, default containers-ci/debian:bookworm).
    """
    from ci import api
    settings = settings_from(c, profile=profile)
    stdout.print(api.ensure_base_image(settings, force=force))


@task()
@explained
def up(c):  # type: ignore[no-untyped-def]
    """Install (from Debian) and start the local services: Docker, sshd, Slurm, registry, Charliecloud.

    Then create the local Debian base image if it is missing (no registry can be reached).
    Idempotent: a service that already answers is left alone. Needs root to install.
    sshd listens on 127.0.0.1:2222 only, with a throw-away key, for the SSH code paths.
    """
    from ci import api
    from ci.local import services as local
    for line in local.up(local.ALL_SERVICES, say=lambda text: stderr.print(text)):
        stdout.print(line)
    emulates = local.binfmt_ready()
    for line in api.ensure_local_images(settings_from(c), arm64=emulates, can_emulate=emulates):
        stdout.print(line)


@task(help={"force": "Rebuild the image even when its inputs did not change.", "profile": COMMON_HELP["profile"]})
@explained
def spack_builder_task(c, force=False, profile=None):  # type: ignore[no-untyped-def]
    """Create the STAND-IN Spack builder image (ci.spack.builder_image) FROM the local base image.

    Spack cannot be installed here, so local runs and tests build Spack definitions with a small
    program (ci/local/spack_standin/spack_standin.py) that implements only the spack subcommands of the
    generated Dockerfile, in Spack's file formats. Production uses a real Spack image. A no-op when
    the image exists with the same inputs.
    """
    from ci import api
    settings = settings_from(c, profile=profile)
    stdout.print(api.ensure_base_image(settings), highlight=False)
    stdout.print(spack_builder_image(settings, force=force), highlight=False)


@task(help={"force": "Recreate the image even if it exists.", "profile": COMMON_HELP["profile"]})
@explained
def arm64_base_task(c, force=False, profile=None):  # type: ignore[no-untyped-def]
    """Create the tiny arm64 base image (containers-ci/busybox:arm64) that arm64/ definitions start FROM.

    Debian's busybox-static for arm64 is fetched with apt in an amd64 stage and installed into an empty
    linux/arm64 image; its RUN steps run under QEMU, which `inv local.up` registers with binfmt_misc.
    No registry is needed. A no-op when the image exists.
    """
    from ci import api
    from ci.local import foreign_base
    from ci.local import services as local
    settings = settings_from(c, profile=profile)
    stdout.print(foreign_base.ensure_foreign_base(api.docker_engine(settings), force=force,
                                                   can_emulate=local.binfmt_ready()), highlight=False)



def spack_builder_image(settings: Any, force: bool = False) -> str:
    """The stand-in builder, when ci.spack.builder_image names it (a real Spack image is left alone)."""
    from ci import api
    from ci.local import spack_builder
    spack = settings.spack
    if spack.builder_image != spack_builder.STANDIN_TAG:
        return f"{spack.builder_image} is a real Spack image (the stand-in is not needed)"
    return spack_builder.ensure_standin_builder(api.docker_engine(settings), spack.builder_image,
                                                settings.base_image.tag, force=force)


ns = Collection("local")
ns.add_task(up, name="up", default=True)
ns.add_task(base_image_task, name="base-image")
ns.add_task(spack_builder_task, name="spack-builder")
ns.add_task(arm64_base_task, name="arm64-base")
