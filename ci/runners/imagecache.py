"""The runner image once per node: a node-local cache keyed by the image's digest.

With `ci.runners.container` set, every runner job runs the runner inside an image file on shared
storage (a SIF, a SquashFS, or a `docker save` archive). Reading it from the shared file system
by every job is what run-gha-on-slurm avoids with CVMFS; here each node keeps one copy per digest
in `<node_tmp>/ci-runner-images-<uid>/` (0700, per user: another user cannot swap the image):

- the allocator resolves the digest (sha256 of the file) on the cluster side once per change of
  the file (size, mtime, inode) and writes it into the job script;
- the job takes the digest's lock (`flock`), so two jobs starting together on one node fetch it
  once: the first copies the file in, checks the copy's sha256 against the digest and renames it
  into place; the others find it there. The log says `cache hit` or `cache miss`;
- while a job uses an entry it holds a shared lock on it; entries unused for longer than
  `ci.runners.container.cache_max_age` whose lock nobody holds are pruned by the next job.

A changed image is a new digest, so the next job fetches it again (and the old entry ages out).
"""

from __future__ import annotations

import posixpath
import re
import shlex
import threading
from dataclasses import dataclass

from ci.config.runners import RunnersSettings
from ci.errors import CIError
from ci.hosts import Host
from ci.runners.nodework import SETUP_EXIT

PLACEHOLDER = "__CI_RUNNER_IMAGE__"  # where the cached path goes in the engine's command line
FETCH_WAIT = 900  # seconds a job waits for another job's fetch of the same image


class ImageCacheError(CIError):
    """The runner image could not be read or digested on the cluster."""


@dataclass(frozen=True)
class ImageDigest:
    source: str
    digest: str  # "sha256:<hex>"
    size: int

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


class Digests:
    """sha256 of the runner image on the cluster side, computed again only when the file changes."""

    def __init__(self, host: Host):
        self.host = host
        self._known: dict[str, tuple[str, ImageDigest]] = {}
        self._lock = threading.Lock()
        self.computed = 0  # how many times the file was read whole (for tests and the log)

    def resolve(self, source: str) -> ImageDigest:
        stat = self.host.run(["stat", "-L", "-c", "%s:%Y:%i", "--", source], check=False)
        if stat.returncode != 0:
            raise ImageCacheError(f"the runner image {source} (ci.runners.container.image) cannot be read on "
                                  f"{self.host.name}: {stat.stderr.strip() or stat.stdout.strip()}")
        key = stat.stdout.strip()
        with self._lock:
            known = self._known.get(source)
            if known is not None and known[0] == key:
                return known[1]
        result = self.host.run(["sha256sum", "--", source], check=False, timeout=1800)
        match = re.match(r"([0-9a-f]{64})\s", result.stdout)
        if result.returncode != 0 or match is None:
            raise ImageCacheError(f"could not digest the runner image {source} on {self.host.name}: "
                                  f"{result.stderr.strip()}")
        digest = ImageDigest(source, f"sha256:{match.group(1)}", int(key.split(":", 1)[0]))
        with self._lock:
            self._known[source] = (key, digest)
            self.computed += 1
        return digest


def suffix(source: str) -> str:
    """The cached copy keeps the source's extension (engines tell image kinds by it)."""
    name = posixpath.basename(source)
    for ending in (".tar.gz", ".tar", ".sif", ".sqfs", ".squashfs", ".img"):
        if name.endswith(ending):
            return ending
    return ""


def fetch(settings: RunnersSettings, image: ImageDigest) -> str:
    """Bash: make `$ci_image` the node-local copy of the runner image (fetching it under a lock)."""
    container = settings.container
    assert container is not None
    cache = shlex.quote(settings.node_tmp) + '/ci-runner-images-"$(id -u)"'
    entry = f"{image.hex}{suffix(image.source)}"
    max_age_minutes = max(1, int(container.cache_max_age // 60))
    return f"""# ---- the runner image from the node's cache (ci/runners/imagecache.py) ----
ci_cache={cache}
mkdir -p -m 700 "$ci_cache" && [ -O "$ci_cache" ] && [ ! -L "$ci_cache" ] || {{
    echo "runner image: cannot use the node cache $ci_cache" >&2; exit {SETUP_EXIT}; }}
ci_image="$ci_cache"/{shlex.quote(entry)}
exec 8>"$ci_cache/{image.hex}.lock"
if ! flock -w {FETCH_WAIT} -x 8; then
    echo "runner image: waited {FETCH_WAIT}s for another job's fetch" >&2; exit {SETUP_EXIT}
fi
if [ -s "$ci_image" ]; then
    touch -c -- "$ci_image"
    ci_log "runner image: cache hit, {image.digest} on $ci_node"
else
    ci_part="$ci_image.part.$$"
    if ! cp -- {shlex.quote(image.source)} "$ci_part"; then
        rm -f -- "$ci_part"; echo "runner image: cannot copy {shlex.quote(image.source)}" >&2; exit {SETUP_EXIT}
    fi
    if [ "$(sha256sum -- "$ci_part" | cut -d' ' -f1)" != {image.hex} ]; then
        rm -f -- "$ci_part"
        echo "runner image: {shlex.quote(image.source)} changed while it was copied (digest is not {image.digest})" >&2
        exit {SETUP_EXIT}
    fi
    mv -f -- "$ci_part" "$ci_image"
    ci_log "runner image: cache miss, fetched {image.digest} ({image.size} bytes) into $ci_cache on $ci_node"
fi
flock -s 8  # in use: the next job's pruning leaves it alone
for ci_old in "$ci_cache"/*; do
    case "$ci_old" in *.lock|*.part.*|"$ci_image") continue ;; esac
    [ -f "$ci_old" ] || continue
    [ -n "$(find "$ci_old" -maxdepth 0 -mmin +{max_age_minutes} 2>/dev/null)" ] || continue
    ci_old_lock="$ci_cache/$(basename "$ci_old" | cut -d. -f1).lock"
    (flock -n -x 9 && rm -f -- "$ci_old" "$ci_old_lock" && echo "runner image: pruned $ci_old") 9>>"$ci_old_lock"
done
"""
