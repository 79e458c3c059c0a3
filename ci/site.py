"""The HPC site's folders (DESIGN.md section 4), its lock, and atomic promotion.

```
<root>/staging/<run-id>/<image>/   per-run work
<root>/tested/<name>/<stem>/       passed: <stem>.<sif|sqfs|tar> + logs + result.json
<root>/failed/<name>/<stem>/       failed: the same
<root>/runs/<run-id>/              report.json, junit.xml, summary.md
```
`<stem>` is `<name>-<version>-<digest12>`. An image is promoted by renaming its whole staged
folder, one rename(2) inside the site root, so `tested/` and `failed/` never hold half a result.
Every operation goes through a `Host`, so the same code serves a local folder and a login node.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ci.errors import SiteError
from ci.hosts import Host

TESTED = "tested"
FAILED = "failed"
STAGING = "staging"
RUNS = "runs"
LOCK = ".lock"


def image_stem(name: str, version: str, digest: str) -> str:
    return f"{name}-{version}-{digest[:12]}"


@dataclass(frozen=True)
class LockOwner:
    run_id: str
    host: str
    pid: int
    since: float
    boot_id: str = ""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {when})"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def this_process(run_id: str) -> LockOwner:
    return LockOwner(run_id=run_id, host=socket.gethostname(), pid=os.getpid(), since=time.time(), boot_id=_boot_id())


def owner_is_dead(owner: LockOwner) -> bool:
    """True only when we can prove it: same host and boot, and no such process."""
    if owner.host != socket.gethostname() or owner.boot_id != _boot_id() or not owner.boot_id:
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SiteLocked(SiteError):
    def __init__(self, path: str, owner: LockOwner | None, stale: bool):
        self.owner = owner
        self.stale = stale
        who = owner.describe() if owner else "an unknown run (no owner file)"
        if stale:
            message = (f"the site lock {path} is held by {who}, which is no longer running; "
                       f"resume it with --resume {owner.run_id if owner else 'RUN'} or, after checking, "
                       f"remove it with `inv site.unlock`")
        else:
            message = f"the site is in use by {who}; wait for it to finish (lock: {path})"
        super().__init__(message)


@dataclass
class SiteListing:
    """Which digests (12 characters) each image name has in tested/ and failed/."""

    tested: dict[str, set[str]] = field(default_factory=dict)
    failed: dict[str, set[str]] = field(default_factory=dict)

    def state(self, name: str, digest: str) -> str | None:
        if digest[:12] in self.tested.get(name, set()):
            return TESTED
        if digest[:12] in self.failed.get(name, set()):
            return FAILED
        return None


class Site:
    """One site root on one host."""

    def __init__(self, host: Host, root: str):
        self.host = host
        self.root = root.rstrip("/") or "/"

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def ensure_layout(self) -> None:
        self.host.run(["mkdir", "-p", *(self.path(part) for part in (STAGING, TESTED, FAILED, RUNS))])

    # ---------------------------------------------------------------- lock

    def read_lock(self) -> LockOwner | None:
        owner_file = self.path(LOCK, "owner.json")
        if not self.host.exists(owner_file):
            return None
        try:
            return LockOwner(**json.loads(self.host.read_text(owner_file)))
        except (ValueError, TypeError):
            return None

    def acquire(self, run_id: str, *, take_over_dead: str | None = None) -> LockOwner:
        """Take the site lock (an atomic mkdir); a dead owner's lock is taken over only for its own run."""
        lock = self.path(LOCK)
        me = this_process(run_id)
        if not self.host.run(["mkdir", lock], check=False).ok:
            owner = self.read_lock()
            if owner is None and not self.host.exists(lock):
                return self.acquire(run_id, take_over_dead=take_over_dead)
            stale = owner is not None and owner_is_dead(owner)
            if not (stale and owner is not None and take_over_dead == owner.run_id == run_id):
                raise SiteLocked(lock, owner, stale)
        self.host.write_text(self.path(LOCK, "owner.json"), json.dumps(me.__dict__))
        return me

    def release(self, run_id: str) -> None:
        owner = self.read_lock()
        if owner is not None and owner.run_id != run_id:
            return  # not ours any more: never remove another run's lock
        self.host.run(["rm", "-rf", self.path(LOCK)], check=False)

    @contextmanager
    def locked(self, run_id: str, *, resume: bool = False) -> Iterator[LockOwner]:
        owner = self.acquire(run_id, take_over_dead=run_id if resume else None)
        try:
            yield owner
        finally:
            self.release(run_id)

    def force_unlock(self) -> LockOwner | None:
        """Remove the lock whoever holds it; for a person who checked that its run is gone."""
        owner = self.read_lock()
        self.host.run(["rm", "-rf", self.path(LOCK)], check=False)
        return owner

    # ---------------------------------------------------------------- listing and promotion

    def listing(self) -> SiteListing:
        """One `find` over tested/ and failed/ answers every skip decision of a plan."""
        result = self.host.run(["find", self.path(TESTED), self.path(FAILED), "-mindepth", "2", "-maxdepth", "2",
                                "-type", "d"], check=False)
        listing = SiteListing()
        for line in result.stdout.splitlines():
            relative = line[len(self.root) + 1:] if line.startswith(self.root + "/") else line
            parts = relative.split("/")
            if len(parts) != 3 or parts[0] not in (TESTED, FAILED):
                continue
            kind, name, stem = parts
            if not stem.startswith(name + "-"):
                continue
            digest12 = stem.rsplit("-", 1)[-1]
            bucket = listing.tested if kind == TESTED else listing.failed
            bucket.setdefault(name, set()).add(digest12)
        return listing

    def staging(self, run_id: str, image: str) -> str:
        return self.path(STAGING, run_id, image)

    def promoted_path(self, verdict: str, name: str, stem: str) -> str:
        return self.path(verdict, name, stem)

    def promote(self, run_id: str, name: str, stem: str, verdict: str, result: dict[str, Any]) -> str:
        """Move staging/<run>/<name>/<stem>/ to tested|failed/<name>/<stem>/ with one rename.

        A previous result for the same digest (a retried failure, a forced rerun) is moved back
        to staging first, so the rename never lands on top of an existing folder.
        """
        if verdict not in (TESTED, FAILED):
            raise SiteError(f"unknown verdict {verdict!r}")
        source = self.path(STAGING, run_id, name, stem)
        self.host.write_text(f"{source}/result.json", json.dumps(result, indent=2, default=str))
        target = self.promoted_path(verdict, name, stem)
        self.host.run(["mkdir", "-p", self.path(verdict, name), self.path(STAGING, run_id, "replaced")])
        for kind in (TESTED, FAILED):
            previous = self.promoted_path(kind, name, stem)
            if self.host.exists(previous):
                self.host.run(["mv", "-T", previous,
                               self.path(STAGING, run_id, "replaced", f"{kind}-{stem}-{int(time.time())}")])
        self.host.run(["mv", "-T", source, target])
        return target

    def clean_staging(self, older_than_days: float, keep: set[str] | None = None) -> list[str]:
        """Remove staging/<run>/ folders older than N days; return what was removed."""
        minutes = int(older_than_days * 24 * 60)
        found = self.host.run(["find", self.path(STAGING), "-mindepth", "1", "-maxdepth", "1", "-type", "d",
                               "-mmin", f"+{minutes}"], check=False).stdout.split()
        removed = [path for path in found if os.path.basename(path) not in (keep or set())]
        if removed:
            self.host.run(["rm", "-rf", *removed])
        return removed
