"""The HPC site's folders (docs/site.md, "Layout"), its lock, and atomic promotion.

```
<root>/staging/<run-id>/<image>/   per-run work
<root>/tested/<name>/<stem>/       passed: <stem>.<sif|sqfs|tar> + logs + result.json
<root>/failed/<name>/<stem>/       failed: the same
<root>/runs/<run-id>/              report.json, junit.xml, summary.md
```
`<stem>` is `<name>-<version>-<digest12>`. An image is promoted by renaming its whole staged
folder, one rename(2) inside the site root, so `tested/` and `failed/` never hold half a result.
Every operation goes through a `Host`, so the same code serves a local folder and a login node.

The site lock (`<root>/.lock/`) keeps runs apart, with nothing but rename(2) and mkdir(2) on the
site's file system (so it works the same over SSH):

- acquire: a complete lock folder (`owner.json` naming the run and a fresh generation `nonce`,
  `members/<member>`) is made under a unique name and renamed onto `.lock`; of racing runs
  exactly one rename succeeds.
- lease: each member renews its heartbeat (its member file's mtime, judged by the site host's
  clock) every lease/4; a lock whose members all stopped renewing for `lease` seconds
  (`ci.site.lock_lease`, default 600) is free for any run, so a dead host's lock expires.
  A member that finds the lock gone or changed has lost it, and its run is cancelled.
- take-over and release: removing a generation needs its gate (`mkdir .lock.gate-<nonce>`), and
  the gate's holder checks that `.lock` is still that generation before it renames it away; so
  of two runs taking over one dead lock exactly one wins, and nobody removes a newer lock.
- one run, several processes: the parallel workflow jobs of one run (`--run RUN`) join the run's
  live lock as members and each hold it; the last one to leave removes it. A dead run's lock is
  taken over (never joined) by the run resuming it.

Every change is appended to `<root>/.lock.log` (site time, event, run, generation, process), so
who held the site when can be read afterwards.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ci.errors import SiteError
from ci.hosts import Host

TESTED = "tested"
FAILED = "failed"
STAGING = "staging"
RUNS = "runs"
LOCK = ".lock"
LOCK_LOG = ".lock.log"
DEFAULT_LEASE = 600.0


def image_stem(name: str, version: str, digest: str) -> str:
    return f"{name}-{version}-{digest[:12]}"


# ---------------------------------------------------------------- the lock

# One round trip reads everything a lock decision needs, with the site host's clock (so the
# lease does not depend on the clocks of the machines that hold it): `now`, the owner file, and
# one line per member with its heartbeat (the file's mtime).
_READ_LOCK = r"""cd "$1" 2>/dev/null || { echo "none"; exit 0; }
echo "now $(date +%s)"
if t=$(stat -c %Y owner.json 2>/dev/null) && o=$(tr -d '\n' < owner.json 2>/dev/null); then echo "owner $t $o"; fi
[ -d members ] && echo "members"
for m in members/*; do
    t=$(stat -c %Y "$m" 2>/dev/null) && c=$(tr -d '\n' < "$m" 2>/dev/null) || continue
    echo "member $t ${m#members/} $c"
done
"""
# Make a complete lock folder under a unique name, then rename it into place: rename(2) of a
# folder onto an existing non-empty one fails, so of two runs exactly one wins, and a lock never
# exists without its owner file.
_CREATE = r"""set -e
tmp=$1 lock=$2 member=$3
mkdir -m 700 "$tmp" "$tmp/members"
printf '%s\n' "$4" > "$tmp/owner.json"
printf '%s\n' "$5" > "$tmp/members/$member"
if mv -T "$tmp" "$lock" 2>/dev/null; then exit 0; fi
rm -rf "$tmp"
exit 3
"""
# A member's heartbeat: only while the lock is still the generation it joined, and it a member.
_HEARTBEAT = r"""grep -qF "$2" "$1/owner.json" 2>/dev/null && [ -f "$1/members/$3" ] && touch -c "$1/members/$3" """
# Join the lock of one's own run: add a member file, then check the generation did not change.
_JOIN = r"""set -e
lock=$1 nonce=$2 member=$3
grep -qF "$nonce" "$lock/owner.json" || exit 3
printf '%s\n' "$4" > "$lock/members/.$member.tmp"
mv -f "$lock/members/.$member.tmp" "$lock/members/$member"
grep -qF "$nonce" "$lock/owner.json" || { rm -f "$lock/members/$member"; exit 3; }
"""
# Remove a lock generation (release by its last member, or take-over of a dead one): only the
# holder of the generation's gate may do it, and it checks, gate held, that the lock is still
# that generation; nobody else can remove it meanwhile and no new lock can appear while it exists.
# The history line is written before the rename, gate held: no newer generation can begin before it.
_REMOVE = r"""lock=$1 gate=$2 nonce=$3 grave=$4 log=$5 line=$6
mkdir "$gate" 2>/dev/null || exit 4
if grep -qF "$nonce" "$lock/owner.json" 2>/dev/null; then
    printf '%s %s\n' "$(date +%s.%N)" "$line" >> "$log"
    if mv -T "$lock" "$grave" 2>/dev/null; then rm -rf "$grave" "$gate"; exit 0; fi
fi
rm -rf "$gate"; exit 5
"""
# Append one line to the lock's history (O_APPEND: lines of concurrent writers do not mix).
_HISTORY = r"""printf '%s %s\n' "$(date +%s.%N)" "$2" >> "$1" """
GATE_STALE_SECONDS = 120  # a gate is held for one command; older ones belong to a killed process


@dataclass(frozen=True)
class LockOwner:
    """One process holding (a share of) the site lock for a run."""

    run_id: str
    host: str
    pid: int
    since: float
    boot_id: str = ""
    start: str = ""  # the process's start time (/proc/<pid>/stat), so a reused pid is not taken for it
    member: str = ""
    nonce: str = ""  # the lock generation it belongs to
    lease: float = DEFAULT_LEASE
    age: float | None = None  # seconds since its last heartbeat, as the site host saw it when read

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {when})"

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("age")
        return data


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), or "" when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_process(run_id: str, *, lease: float = DEFAULT_LEASE, nonce: str = "") -> LockOwner:
    pid = os.getpid()
    return LockOwner(run_id=run_id, host=socket.gethostname(), pid=pid, since=time.time(), boot_id=_boot_id(),
                     start=_start_time(pid), member=f"{socket.gethostname()}-{pid}-{uuid.uuid4().hex[:8]}",
                     nonce=nonce, lease=lease)


def owner_is_dead(owner: LockOwner) -> bool:
    """True only when we can prove it: same host and boot, and no such process (or another one
    that reuses its pid)."""
    if owner.host != socket.gethostname() or owner.boot_id != _boot_id() or not owner.boot_id:
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return bool(owner.start) and _start_time(owner.pid) not in ("", owner.start)


def owner_expired(owner: LockOwner) -> bool:
    """Its heartbeat is older than its lease: the holder (on whatever host) stopped renewing it."""
    return owner.age is not None and owner.age > owner.lease


@dataclass(frozen=True)
class LockState:
    """The lock as read in one round trip: its generation, run, and members."""

    run_id: str
    nonce: str
    members: tuple[LockOwner, ...]
    lease: float = DEFAULT_LEASE

    @property
    def owner(self) -> LockOwner | None:
        """The member to name in messages: a live one if any, else the most recent."""
        live = [m for m in self.members if not (owner_is_dead(m) or owner_expired(m))]
        chosen = live or sorted(self.members, key=lambda m: m.age if m.age is not None else 0.0)
        if chosen:
            return chosen[0]
        return LockOwner(run_id=self.run_id, host="?", pid=0, since=0.0, nonce=self.nonce, lease=self.lease)

    @property
    def dead(self) -> bool:
        """Every member is provably gone (a crashed run of this machine): resumable now."""
        return all(owner_is_dead(m) or owner_expired(m) for m in self.members)

    @property
    def expired(self) -> bool:
        """No member renewed its heartbeat within the lease: free for any run."""
        return all(owner_expired(m) for m in self.members)


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


class SiteLease:
    """A held share of the site lock: renewed by a heartbeat thread until released.

    `on_lost` is called (once, from the heartbeat thread) when the lock turns out to be gone or
    taken by another generation: the holder stalled longer than the lease and someone took the
    site over, so the holder must stop (ci.api cancels its run).
    """

    def __init__(self, site: Site, me: LockOwner, *, took_over: LockOwner | None = None, joined: bool = False,
                 on_lost: Callable[[str], None] | None = None, interval: float | None = None):
        self.site = site
        self.me = me
        self.took_over = took_over
        self.joined = joined
        self.on_lost = on_lost
        self.interval = interval if interval is not None else max(1.0, min(60.0, me.lease / 4))
        self.lost = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def run_id(self) -> str:
        return self.me.run_id

    def start(self) -> SiteLease:
        self._thread = threading.Thread(target=self._beat, name=f"site-lease-{self.me.run_id}", daemon=True)
        self._thread.start()
        return self

    def heartbeat(self) -> bool:
        """Renew the lease once; False when the lock is no longer ours."""
        lock = self.site.path(LOCK)
        result = self.site.host.run(["sh", "-c", _HEARTBEAT, "sh", lock, _nonce_text(self.me.nonce), self.me.member],
                                    check=False, timeout=60)
        return result.ok

    def _beat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                ok = self.heartbeat()
                failure = "" if ok else "the site lock is gone or belongs to another run now"
            except Exception as exc:  # the site host did not answer: try again, until the lease is up
                ok, failure = False, f"the site host did not answer the heartbeat ({exc})"
                if time.monotonic() - last_ok < self.me.lease:
                    continue
            if ok:
                last_ok = time.monotonic()
                continue
            self.lost = f"lost the site lock: {failure}"
            if self.on_lost is not None:
                self.on_lost(self.lost)
            return

    def release(self) -> None:
        """Leave the lock; the last member removes it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.lost:
            self.site.leave(self.me)


def _nonce_text(nonce: str) -> str:
    """How the generation appears in owner.json (what heartbeat and join grep for)."""
    return f'"nonce": "{nonce}"'


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

    def read_state(self) -> LockState | None:
        """The lock in one round trip (None when the site is not locked)."""
        result = self.host.run(["sh", "-c", _READ_LOCK, "sh", self.path(LOCK)], check=False, timeout=60)
        lines = result.stdout.splitlines()
        if not lines or lines[0] == "none":
            return None
        now = float(lines[0].split()[1]) if lines[0].startswith("now ") else time.time()
        owner: dict[str, Any] = {}
        members: list[LockOwner] = []
        has_members = False
        for line in lines[1:]:
            kind, _, rest = line.partition(" ")
            if kind == "members":
                has_members = True
            elif kind == "owner":
                mtime, _, text = rest.partition(" ")
                try:
                    owner = {**json.loads(text), "_mtime": float(mtime)}
                except (ValueError, TypeError):
                    owner = {}  # being written or removed while read
            elif kind == "member":
                mtime, _, rest = rest.partition(" ")
                _, _, text = rest.partition(" ")
                try:
                    age = now - float(mtime)
                except ValueError:
                    continue
                member = _owner_from(text, age=age)
                if member is not None:
                    members.append(member)
        if not owner and not members:
            return LockState(run_id="", nonce="", members=())  # an empty folder (a crash between mkdir and write)
        if not has_members and owner:  # a lock of an earlier release (no members/): its owner is its member
            legacy = _owner_from(json.dumps({k: v for k, v in owner.items() if k != "_mtime"}),
                                 age=now - float(owner.get("_mtime", now)))
            members = [legacy] if legacy is not None else []
        return LockState(run_id=str(owner.get("run_id", members[0].run_id if members else "")),
                         nonce=str(owner.get("nonce", "")), members=tuple(members),
                         lease=float(owner.get("lease", DEFAULT_LEASE)))

    def read_lock(self) -> LockOwner | None:
        """The holder to name (a live member if any), or None when the site is not locked."""
        state = self.read_state()
        return state.owner if state is not None and (state.members or state.run_id) else None

    def lock(self, run_id: str, *, lease: float = DEFAULT_LEASE, resume: bool = False, join: bool = False,
             on_lost: Callable[[str], None] | None = None, heartbeat: float | None = None) -> SiteLease:
        """Hold the site for `run_id` (a started `SiteLease`; `release()` it).

        A dead lock (every holder provably gone, or silent for its lease) is taken over, whichever run
        asks (`SiteLease.took_over` names the previous holder; a crashed run is resumed by passing its
        id). `join`: a live lock of this same run is joined (the parallel workflow jobs of one run).
        A live lock of another run raises SiteLocked. `resume` is kept for callers that say so.
        """
        me = this_process(run_id, lease=lease)
        previous: LockOwner | None = None
        for _ in range(50):
            me = replace(me, nonce=uuid.uuid4().hex)
            if self._create(me):
                self._history("took-over" if previous else "acquired", me,
                              f"from {previous.describe()}" if previous else "")
                return SiteLease(self, me, took_over=previous, on_lost=on_lost, interval=heartbeat).start()
            state = self.read_state()
            if state is None:
                continue  # released meanwhile
            if not state.members and not state.run_id:
                self.host.run(["rmdir", self.path(LOCK)], check=False)  # an empty folder left by a crash
                continue
            if join and state.run_id == run_id and not state.dead:
                joined = replace(me, nonce=state.nonce)
                if self._join(joined):
                    self._history("joined", joined)
                    return SiteLease(self, joined, joined=True, on_lost=on_lost, interval=heartbeat).start()
                continue
            if state.dead:  # every holder provably gone (or silent for its lease): the next run proceeds
                previous = state.owner
                outcome = self._remove(state, "take-over", me)
                if outcome == 4:
                    time.sleep(0.2)  # another run is taking it over or leaving it: look again
                continue
            raise SiteLocked(self.path(LOCK), state.owner, stale=state.dead)
        raise SiteError(f"could not take the site lock {self.path(LOCK)}: it kept changing hands; try again")

    def acquire(self, run_id: str, *, take_over_dead: str | None = None, lease: float = DEFAULT_LEASE) -> SiteLease:
        """`lock()` for callers that only take the site (a dead owner's lock only for its own run)."""
        return self.lock(run_id, lease=lease, resume=take_over_dead == run_id)

    def leave(self, me: LockOwner) -> None:
        """Remove this member; the last member removes the lock."""
        lock = self.path(LOCK)
        self.host.run(["sh", "-c", 'grep -qF "$1" "$2/owner.json" 2>/dev/null && rm -f "$2/members/$3"', "sh",
                       _nonce_text(me.nonce), lock, me.member], check=False, timeout=60)
        state = self.read_state()
        if state is None or state.nonce != me.nonce:
            return
        if any(not (owner_is_dead(m) or owner_expired(m)) for m in state.members):
            self._history("left", me)
            return
        if self._remove(state, "released", me) == 0:
            return

    def force_unlock(self) -> LockOwner | None:
        """Remove the lock whoever holds it; for a person who checked that its run is gone."""
        owner = self.read_lock()
        grave = self.path(f"{LOCK}.removed-{uuid.uuid4().hex[:12]}")
        if self.host.run(["mv", "-T", self.path(LOCK), grave], check=False).ok:
            self.host.run(["rm", "-rf", grave], check=False)
            if owner is not None:
                self._history("force-unlocked", owner)
        return owner

    def release(self, run_id: str) -> None:
        """Remove this process's membership of `run_id`'s lock (for callers without the SiteLease)."""
        state = self.read_state()
        if state is None or state.run_id != run_id:
            return  # not ours any more: never remove another run's lock
        for member in state.members:
            if member.pid == os.getpid() and member.host == socket.gethostname():
                self.leave(member)

    def _create(self, me: LockOwner) -> bool:
        owner = json.dumps(me.record())
        result = self.host.run(["sh", "-c", _CREATE, "sh", self.path(f"{LOCK}.new-{uuid.uuid4().hex[:12]}"),
                                self.path(LOCK), me.member, owner, owner], check=False, timeout=60)
        return result.ok

    def _join(self, me: LockOwner) -> bool:
        result = self.host.run(["sh", "-c", _JOIN, "sh", self.path(LOCK), _nonce_text(me.nonce), me.member,
                                json.dumps(me.record())], check=False, timeout=60)
        return result.ok

    def _remove(self, state: LockState, why: str, me: LockOwner) -> int:
        """Remove lock generation `state` under its gate; 0 removed, 4 gate busy, 5 no longer that generation."""
        ident = _nonce_text(state.nonce) if state.nonce else f'"run_id": "{state.run_id}"'
        gate = self.path(f"{LOCK}.gate-{state.nonce or 'legacy'}")
        grave = self.path(f"{LOCK}.removed-{uuid.uuid4().hex[:12]}")
        line = self._history_line("removed", me, why, generation=state.nonce or "legacy", run_id=state.run_id)
        result = self.host.run(["sh", "-c", _REMOVE, "sh", self.path(LOCK), gate, ident, grave, self.path(LOCK_LOG),
                                line], check=False, timeout=60)
        if result.returncode == 4:
            # A gate older than any command that holds one belongs to a process killed while holding it.
            self.host.run(["find", gate, "-maxdepth", "0", "-mmin", f"+{GATE_STALE_SECONDS // 60}", "-exec",
                           "rmdir", "{}", ";"], check=False, timeout=60)
        return result.returncode

    @staticmethod
    def _history_line(event: str, who: LockOwner, detail: str = "", *, generation: str | None = None,
                      run_id: str | None = None) -> str:
        return json.dumps({"event": event, "generation": who.nonce if generation is None else generation,
                           "run_id": who.run_id if run_id is None else run_id, "by": who.member, "host": who.host,
                           "pid": who.pid, "detail": detail})

    def _history(self, event: str, who: LockOwner, detail: str = "") -> None:
        """One line of <root>/.lock.log; a generation's `acquired`/`took-over` is written after it exists
        and its `removed` before it is gone, so the logged spans of two generations never overlap
        unless the real ones did."""
        self.host.run(["sh", "-c", _HISTORY, "sh", self.path(LOCK_LOG), self._history_line(event, who, detail)],
                      check=False, timeout=60)

    def lock_spans(self) -> list[tuple[float, float, str]]:
        """Who held the site when: (from, until, run id) per lock generation, oldest first, from the
        history (`until` is infinite while it is held, or when its end was never logged)."""
        spans: dict[str, list[Any]] = {}
        for when, event in self.lock_history():
            generation = str(event.get("generation", ""))
            if event.get("event") in ("acquired", "took-over"):
                spans.setdefault(generation, [when, float("inf"), str(event.get("run_id", ""))])
            elif event.get("event") in ("removed", "force-unlocked") and generation in spans:
                spans[generation][1] = min(spans[generation][1], when)
        return sorted((float(a), float(b), str(c)) for a, b, c in spans.values())

    def lock_history(self) -> list[tuple[float, dict[str, Any]]]:
        """The lock's history: (site time, event) pairs, oldest first."""
        result = self.host.run(["cat", self.path(LOCK_LOG)], check=False)
        history = []
        for line in result.stdout.splitlines():
            when, _, text = line.partition(" ")
            try:
                history.append((float(when), dict(json.loads(text))))
            except ValueError:
                continue
        return history

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

    def staging(self, run_id: str, key: str) -> str:
        """`staging/<run>/<arch>/<name>`: an image key (`amd64/base`) has a folder of its own."""
        return self.path(STAGING, run_id, *key.split("/"))

    def promoted_path(self, verdict: str, name: str, stem: str) -> str:
        return self.path(verdict, name, stem)

    def promote(self, run_id: str, key: str, stem: str, verdict: str, result: dict[str, Any]) -> str:
        """Move staging/<run>/<arch>/<name>/<stem>/ to tested|failed/<name>/<stem>/ with one rename.

        A previous result for the same digest (a retried failure, a forced rerun) is moved back
        to staging first, so the rename never lands on top of an existing folder.
        """
        if verdict not in (TESTED, FAILED):
            raise SiteError(f"unknown verdict {verdict!r}")
        name = key.rsplit("/", 1)[-1]
        source = posixpath.join(self.staging(run_id, key), stem)
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
        staging = self.path(STAGING)
        found = self.host.run(["find", staging, "-mindepth", "1", "-maxdepth", "1", "-type", "d",
                               "-mmin", f"+{minutes}", "-print0"], check=False).stdout.split("\0")
        # NUL-separated: a run id with a space or a newline stays one path, and only staging's own folders go
        removed = [path for path in found if path.startswith(staging + "/") and "/" not in path[len(staging) + 1:]
                   and os.path.basename(path) not in (keep or set())]
        if removed:
            self.host.run(["rm", "-rf", "--", *removed])
        return removed


def _owner_from(text: str, *, age: float) -> LockOwner | None:
    try:
        data = json.loads(text)
        known = {name: data[name] for name in LockOwner.__dataclass_fields__ if name in data and name != "age"}
        return LockOwner(**known, age=age)
    except (ValueError, TypeError):
        return None
