"""The site's programming environment as an image: `inv site.env` tars configured paths on the site.

MPI in a container must use the site's network stack (libfabric, cray-mpich, libcxi on LUMI), so
LUMI's CI tarred those from the login node into a helper image that recipes `COPY --from`. Here:

```yaml
ci:
  site_env:
    paths: [/opt/cray/libfabric, /opt/cray/pe/mpich, /usr/lib64/libcxi.so.1]
    image: site-env          # the tag definitions name: COPY --from=site-env /opt/cray /opt/cray
    root: /                  # where the paths live on the site host (a stand-in tree in tests)
```

The paths are tarred on the site host (over SSH for a remote site, here for a local one), fetched,
and imported into the Docker engine as `<image>` (`docker import`: the image *is* the tar). Its
digest is the SHA-256 of the tar's *content* (names, types, modes, link targets, file bytes; not
times or owners), kept as a label. Every definition that names the image (`COPY --from=site-env`,
`FROM site-env`) mixes that digest into its own as a parent's, so a site update rebuilds exactly
those images, and an unchanged site rebuilds nothing.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ci.config.site_env import SiteEnvSettings
from ci.definitions import ImageSpec
from ci.docker import whales
from ci.docker.engine import DockerEngine
from ci.errors import ConfigError, SiteError
from ci.hosts import Host

DIGEST_LABEL = "io.containers-ci.site-env-digest"
def content_digest(tarball: Path) -> str:
    """SHA-256 over what the tar holds (sorted members: name, type, mode, link, bytes), not when or whose."""
    digest = hashlib.sha256(b"containers-ci site-env v1\n")
    with tarfile.open(tarball) as archive:
        members = sorted(archive.getmembers(), key=lambda member: member.name)
        for member in members:
            digest.update(f"{member.name}\0{member.type.decode()}\0{member.mode & 0o7777:o}\0{member.linkname}\0"
                          .encode())
            if member.isfile():
                handle = archive.extractfile(member)
                assert handle is not None
                digest.update(hashlib.sha256(handle.read()).hexdigest().encode())
            digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class SiteEnvImage:
    image: str
    digest: str
    built: bool  # False: the engine already had an image of this content
    files: int

    def describe(self) -> str:
        what = "imported" if self.built else "unchanged, kept"
        return f"{self.image}: {what} (content digest {self.digest[:12]}, {self.files} entries)"


def capture(host: Host, staging: str, options: SiteEnvSettings, engine: DockerEngine,
            say: Callable[[str], None] = lambda _: None) -> SiteEnvImage:
    """Tar the paths on the site host, fetch the tar, and import it as the site-env image if it changed."""
    if not options.enabled:
        raise ConfigError("ci.site_env.paths is empty: name the site paths to capture (e.g. /opt/cray/libfabric)")
    relative = [path.lstrip("/") for path in options.paths]
    missing = [path for path, rel in zip(options.paths, relative, strict=True)
               if not host.exists(posixpath.join(options.root, rel))]
    if missing:
        raise SiteError(f"ci.site_env.paths not found on {host.name} (under {options.root}): {', '.join(missing)}")
    remote = posixpath.join(staging, f".site-env-{uuid.uuid4().hex[:12]}.tar")
    host.run(["mkdir", "-p", staging])
    try:
        say(f"tarring {len(relative)} path(s) on {host.name}")
        host.run(["tar", "-C", options.root, "-cf", remote, "--", *relative])
        with tempfile.TemporaryDirectory(prefix="ci-site-env-") as scratch:
            local = Path(scratch) / "site-env.tar"
            host.get(remote, local)
            digest = content_digest(local)
            with tarfile.open(local) as archive:
                files = len(archive.getmembers())
            if current_digest(engine, options.image) == digest:
                return SiteEnvImage(options.image, digest, False, files)
            engine.import_rootfs(local, options.image, changes=[f"LABEL {DIGEST_LABEL}={digest}"])
            return SiteEnvImage(options.image, digest, True, files)
    finally:
        host.run(["rm", "-f", remote], check=False)


def current_digest(engine: DockerEngine, image: str) -> str | None:
    """The content digest of the site-env image in the engine, or None when it has none."""
    value = (engine.labels(image) or {}).get(DIGEST_LABEL)
    return str(value) if value else None


def uses(spec: ImageSpec, image: str) -> bool:
    """Whether a definition builds on the image: `COPY --from=<image>` (any instruction's --from) or FROM it."""
    name = re.escape(image)
    pattern = rf"(?im)(--from=[\"']?{name}(?::latest)?[\"']?(\s|$)|^\s*FROM\s+{name}(?::latest)?(\s|$))"
    return re.search(pattern, spec.composed_dockerfile()) is not None


def parent_digests(options: SiteEnvSettings, engine: DockerEngine | None) -> Callable[[ImageSpec], list[str]]:
    """The plan's extra parents: the site-env digest for the definitions that use the image.

    Without ci.site_env.paths, or before the first capture, nothing is added (a definition that
    copies from a site-env image nobody made fails its build, which says so).
    """
    digest = current_digest(engine, options.image) if options.enabled and engine is not None else None

    def extra(spec: ImageSpec) -> list[str]:
        return [f"site-env:{digest}"] if digest and uses(spec, options.image) else []

    return extra


def extra_parents(options: SiteEnvSettings, engine: DockerEngine | None) -> Callable[[ImageSpec], list[str]]:
    """`parent_digests` for the `ci.site_env` section of the settings (what ci.api hands the plan)."""
    try:
        return parent_digests(options, engine)
    except whales.DockerException:  # an engine that does not answer: the plan goes on without it, as for images
        return parent_digests(SiteEnvSettings(), None)
