"""The bounded worker pool: claim a queued build with a lease, run it, keep the lease alive.

The bound is the number of slot rows in the database (`ci.service.pool`), shared by every
replica: a replica runs up to that many worker threads, and each needs a free slot to claim a
build. A lease that is not renewed expires; any replica's reaper then re-queues the build (or
fails it after `max_attempts`), so after a crash nothing stays "active". On this host a dead
worker process is noticed at once, without waiting for its lease.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from ci.service import builder, crud
from ci.service.models import Status
from ci.service.service import Service


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def new_owner() -> str:
    """`host/boot/pid/nonce`: enough to prove, on this host, that the owner is gone."""
    return f"{socket.gethostname()}/{_boot_id()[:8]}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


def owner_dead(owner: str) -> bool:
    parts = owner.split("/")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1] or parts[1] != _boot_id()[:8]:
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # another pool of this very process (tests run two replicas in one): alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class BuildLog:
    """A build's redacted log file, appended to by its worker, read by the API."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text)


class Pool:
    def __init__(self, service: Service, *, threads: int | None = None, say: Callable[[str], None] = print):
        self.service = service
        self.settings = service.settings
        self.owner = new_owner()
        self.threads = self.settings.pool if threads is None else threads
        self.say = say
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._workers: list[threading.Thread] = []
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        crud.ensure_slots(self.service.db, self.settings.pool)
        self.reap()
        if self.threads <= 0:
            return
        for number in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"cic-worker-{number}", daemon=True)
            thread.start()
            self._workers.append(thread)
        reaper = threading.Thread(target=self._reaper, name="cic-reaper", daemon=True)
        reaper.start()
        self._workers.append(reaper)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; builds still running are ended and given back to the queue."""
        self.stopping.set()
        self.wake.set()
        with self._lock:
            for event in self._running.values():
                event.set()
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def reap(self) -> None:
        for build_id, message in crud.reap(self.service.db, self.settings.max_attempts, owner_dead):
            self.say(f"build {build_id}: {message}")
            BuildLog(self.service.log_path(build_id))(f"=== {message}\n")

    def _reaper(self) -> None:
        interval = max(0.5, min(self.settings.lease_seconds / 3, 10.0))
        while not self.stopping.wait(interval):
            try:
                self.reap()
            except Exception as exc:  # the database may be briefly unreachable; the next round retries
                self.say(f"reaper: {type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                claimed = crud.claim(self.service.db, self.owner, self.settings.lease_seconds, self.settings.pool)
            except Exception as exc:
                self.say(f"claim failed, retrying: {type(exc).__name__}: {exc}")
                claimed = None
            if claimed is None:
                self.wake.wait(self.settings.poll_interval)
                self.wake.clear()
                continue
            self.run(claimed)

    # -------------------------------------------------------------- one build

    def run(self, claimed: crud.Claimed) -> Status | None:
        """Run a claimed build to its end; the final status, or None when the lease was lost or released."""
        db, settings = self.service.db, self.settings
        log = BuildLog(self.service.log_path(claimed.build_id))
        cancelled = threading.Event()
        lost = threading.Event()
        with self._lock:
            self._running[claimed.build_id] = cancelled
        log(f"=== attempt {claimed.attempt}: run {claimed.run_id} in slot {claimed.slot} ({self.owner})\n")

        def keep_lease() -> None:
            while not done.wait(max(0.2, settings.lease_seconds / 3)):
                try:
                    ours, cancel = crud.heartbeat(db, claimed, self.owner, settings.lease_seconds)
                except Exception:
                    continue  # renew again soon; the lease outlives a short outage
                if not ours:
                    lost.set()
                    cancelled.set()
                elif cancel:
                    cancelled.set()

        done = threading.Event()
        heart = threading.Thread(target=keep_lease, name=f"cic-lease-{claimed.build_id[:8]}", daemon=True)
        heart.start()
        slot_settings = builder.slot_settings(settings.pipeline, settings.slot_root(claimed.slot), claimed.slot,
                                              Path(claimed.definitions), claimed.arch,
                                              workflow=claimed.kind == "workflow")
        try:
            for line in builder.settle_slot(slot_settings):
                log(f"slot {claimed.slot}: {line}\n")
            outcome = builder.run(
                slot_settings, image=claimed.image, run_id=claimed.run_id, force=claimed.force,
                work=settings.builds_dir / claimed.build_id / "work", log=log, cancelled=cancelled,
                on_step=lambda status, message: (crud.progress(db, claimed, self.owner, status, message), None)[1])
        except Exception as exc:
            log(traceback.format_exc())
            outcome = builder.Outcome(Status.FAILED, f"the service could not run the build: {type(exc).__name__}: "
                                                     f"{exc}")
        finally:
            done.set()
            with self._lock:
                self._running.pop(claimed.build_id, None)
        if outcome.status is Status.CANCELLED:
            try:
                for line in builder.settle_slot(slot_settings):  # the jobs the killed run left on the scheduler
                    log(f"slot {claimed.slot}: {line}\n")
            except Exception as exc:
                log(f"slot {claimed.slot}: cleaning up failed: {exc}\n")
        if lost.is_set():
            log("=== the lease of this build was taken over (this worker stalled); its result is discarded\n")
            return None
        if outcome.status is Status.CANCELLED and self.stopping.is_set():
            crud.release(db, claimed, self.owner, "re-queued: the server stopped while it ran")
            log("=== the server stopped; the build goes back to the queue\n")
            return None
        stored = None
        if outcome.status is Status.FINISHED and outcome.image_file is not None:
            try:
                stored = self.service.store.put(outcome.image_file, claimed.image, outcome.version or "latest",
                                                outcome.suffix or "img")
            except OSError as exc:
                outcome = builder.Outcome(Status.FAILED, f"the image could not be stored: {exc}")
        if outcome.status is Status.FINISHED and claimed.kind == "workflow":
            from ci.service.eflows.push import push_finished  # eFlows4HPC's `push` (ci/service/eflows)

            failure = push_finished(db, claimed.build_id, log)
            if failure is not None:
                outcome, stored = builder.Outcome(Status.FAILED, failure), None
        shutil.rmtree(settings.builds_dir / claimed.build_id / "work", ignore_errors=True)  # unredacted output
        message = outcome.message if outcome.status is not Status.CANCELLED else "cancelled while it ran"
        log(f"=== {outcome.status.value}: {message}\n")
        crud.finish(db, claimed, self.owner, outcome.status, message,
                    filename=stored.filename if stored else None, sha256=stored.sha256 if stored else None,
                    size=stored.size if stored else None)
        return outcome.status
