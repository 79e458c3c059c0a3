"""A Debian base image made locally, so definitions build where no registry can be reached.

debootstrap writes a minimal root file system from Debian's mirror and `docker import` turns
it into an image; the tag is checked first, so running it again costs nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ci.config.settings import BaseImageSettings
from ci.docker.engine import DockerEngine
from ci.errors import CIError


def debootstrap_command(settings: BaseImageSettings, target: Path) -> list[str]:
    command = ["debootstrap", f"--variant={settings.variant}"]
    if settings.include:
        command.append("--include=" + ",".join(settings.include))
    return [*command, settings.suite, str(target), settings.mirror]


def ensure_base_image(engine: DockerEngine, settings: BaseImageSettings, *, force: bool = False,
                      workdir: Path | None = None) -> str:
    """Create the base image unless it exists; return what was done, for the person watching."""
    if not force and engine.image_exists(settings.tag):
        return f"{settings.tag} is present"
    if shutil.which("debootstrap") is None:
        raise CIError("debootstrap is not installed; run `inv local.up` or `apt-get install debootstrap`")
    with tempfile.TemporaryDirectory(prefix="ci-base-", dir=workdir) as scratch:
        root = Path(scratch) / "rootfs"
        log = Path(scratch) / "debootstrap.log"
        with log.open("w") as handle:
            result = subprocess.run(debootstrap_command(settings, root), stdout=handle, stderr=subprocess.STDOUT,
                                    check=False)
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise CIError(f"debootstrap {settings.suite} from {settings.mirror} failed "
                          f"(exit {result.returncode}):\n{tail}")
        tarball = Path(scratch) / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], check=True)
        engine.import_rootfs(tarball, settings.tag, changes=['CMD ["/bin/bash"]', "ENV LANG=C.UTF-8"])
    return f"{settings.tag} created from debootstrap {settings.variant} {settings.suite}"
