"""Database operations of the service: users and tokens, requests and the builds they share, the pool.

Every function is one transaction. Races are settled by the database: a content key has at most
one current build (a unique constraint, retried on conflict), a slot holds at most one build and a
build at most one slot (unique constraints), and a claim locks the rows it takes (`FOR UPDATE SKIP
LOCKED` on PostgreSQL; SQLite serializes writers with `BEGIN IMMEDIATE`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from ci.service.core import security
from ci.service.db import Database
from ci.service.models import ACTIVE, TERMINAL, Build, Claim, Request, Slot, Status, Token, User

USER_NAME = r"^[a-z][a-z0-9_.-]{0,63}\Z"


class NotFound(LookupError):
    """No such build (or download) for anyone."""


class Forbidden(PermissionError):
    """The build exists but belongs to somebody else."""


@dataclass(frozen=True)
class Caller:
    id: int
    name: str
    admin: bool


@dataclass(frozen=True)
class Resolved:
    """A request turned into pipeline terms: which image of which tree, and its content key."""

    kind: str
    image: str
    arch: str
    engine: str
    machine: dict[str, Any]
    definitions: str
    digest: str
    image_id: str
    key: str
    force: bool = False
    workflow: str | None = None
    step_id: str | None = None
    version: str | None = None
    failure: str | None = None  # set: the request is valid but cannot be built here (the build is FAILED at once)
    source: dict[str, Any] | None = None  # eFlows4HPC steps: where the step came from, at which commits


@dataclass(frozen=True)
class Claimed:
    """A build a worker took, with the slot it holds."""

    build_id: str
    slot: int
    run_id: str
    image: str
    arch: str
    engine: str
    definitions: str
    force: bool
    attempt: int
    kind: str = "definition"


@dataclass
class Counts:
    by_status: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    slots: int = 0
    busy_slots: int = 0


def new_id() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------------------------------------
# Users and tokens
# ------------------------------------------------------------------------------------------------


def issue_token(db: Database, name: str, *, admin: bool = False) -> str:
    """A new token for `name` (the user is created when new; `admin` grants the admin role)."""
    token = security.new_token()
    with db.writing() as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            user = User(name=name, role="admin" if admin else "user", created=time.time())
            session.add(user)
            session.flush()
        elif admin and user.role != "admin":
            user.role = "admin"
        session.add(Token(user_id=user.id, hash=security.token_hash(token), created=time.time()))
    return token


def ensure_user(db: Database, name: str) -> Caller:
    """A user without a token (the library mode's own)."""
    with db.writing() as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            user = User(name=name, role="user", created=time.time())
            session.add(user)
            session.flush()
        return Caller(user.id, user.name, user.role == "admin")


def authenticate(db: Database, user_name: str | None, token: str) -> Caller | None:
    """The caller a token belongs to; with HTTP basic, the user name must match too."""
    if not security.TOKEN_PATTERN.match(token):
        return None
    with db.reading() as session:
        row = session.execute(select(User).join(Token, Token.user_id == User.id)
                              .where(Token.hash == security.token_hash(token))
                              .where((Token.expires.is_(None)) | (Token.expires > time.time()))).scalar_one_or_none()
        if row is None or (user_name is not None and not security.same(user_name, row.name)):
            return None
        return Caller(row.id, row.name, row.role == "admin")


# ------------------------------------------------------------------------------------------------
# Requests and builds
# ------------------------------------------------------------------------------------------------


def submit(db: Database, caller: Caller, resolved: Resolved) -> tuple[Request, Build]:
    """Record a request; attach it to the current build of its key, or start a new build.

    A FINISHED build is served again unless `force`; a build in flight is always joined. Two
    replicas inserting the same key at once: one insert loses on the unique constraint and the
    retry attaches to the winner.
    """
    for _attempt in range(5):
        try:
            with db.writing() as session:
                now = time.time()
                build = None
                if resolved.failure is None:
                    build = session.scalar(select(Build).where(Build.current_key == resolved.key).with_for_update())
                    if build is not None and resolved.force and build.status == Status.FINISHED:
                        build.current_key = None  # superseded: the rebuild becomes the current one
                        session.flush()
                        build = None
                attached = build is not None
                if build is None:
                    failed = resolved.failure is not None
                    build = Build(
                        id=new_id(), key=resolved.key, current_key=None if failed else resolved.key,
                        kind=resolved.kind, image=resolved.image, arch=resolved.arch, engine=resolved.engine,
                        machine=json.dumps(resolved.machine, sort_keys=True), workflow=resolved.workflow,
                        step_id=resolved.step_id, version=resolved.version, definitions=resolved.definitions,
                        digest=resolved.digest, image_id=resolved.image_id, force=resolved.force,
                        status=(Status.FAILED if failed else Status.PENDING).value,
                        message=resolved.failure or "queued", attempts=0, cancel_requested=False,
                        created=now, updated=now, finished=now if failed else None,
                        source=json.dumps(resolved.source, sort_keys=True) if resolved.source else None)
                    session.add(build)
                    session.flush()
                request = Request(id=new_id(), build_id=build.id, user_id=caller.id, created=now, cancelled=False,
                                  attached=attached)
                session.add(request)
                return request, build
        except IntegrityError:
            continue
    raise RuntimeError("could not record the request: the database kept reporting conflicts")


def _visible(session: Any, caller: Caller, request_id: str) -> tuple[Request, Build]:
    request = session.get(Request, request_id)
    if request is None:
        raise NotFound(request_id)
    if request.user_id != caller.id and not caller.admin:
        raise Forbidden(request_id)
    return request, session.get(Build, request.build_id)


_OTHER = aliased(Request)
_SHARED = select(func.count(_OTHER.id)).where(_OTHER.build_id == Build.id).correlate(Build).scalar_subquery()
# Built once: making the statement costs more than running it on SQLite.
_GET = (select(Request, Build, _SHARED).join(Build, Build.id == Request.build_id)
        .where(Request.id == bindparam("request_id")))


def get(db: Database, caller: Caller, request_id: str) -> tuple[Request, Build, int]:
    """The request, its build, and how many requests share that build (one query: this is what clients poll)."""
    with db.reading() as session:
        row = session.execute(_GET, {"request_id": request_id}).first()
        if row is None:
            raise NotFound(request_id)
        request, build, count = row
        if request.user_id != caller.id and not caller.admin:
            raise Forbidden(request_id)
        return request, build, int(count or 1)


def listing(db: Database, caller: Caller, limit: int = 100) -> list[tuple[Request, Build, int]]:
    """The caller's requests (an admin's: everybody's), newest first."""
    with db.reading() as session:
        query = select(Request, Build).join(Build, Build.id == Request.build_id)
        if not caller.admin:
            query = query.where(Request.user_id == caller.id)
        rows = session.execute(query.order_by(Request.created.desc()).limit(limit)).all()
        ids = {build.id for _, build in rows}
        shared = dict(session.execute(select(Request.build_id, func.count()).where(Request.build_id.in_(ids))
                                      .group_by(Request.build_id)).all()) if ids else {}
        return [(request, build, int(shared.get(build.id, 1))) for request, build in rows]


def cancel(db: Database, caller: Caller, request_id: str) -> None:
    """Cancel a request. If other requests share its build, only this one is detached (an admin
    cancels the build for all); a queued build is cancelled at once, a running one is asked to stop."""
    with db.writing() as session:
        request, build = _visible(session, caller, request_id)
        if request.cancelled or build.status in TERMINAL:
            return
        others = session.scalar(select(func.count()).select_from(Request).where(
            Request.build_id == build.id, Request.id != request.id, Request.cancelled.is_(False))) or 0
        if others and not caller.admin:
            request.cancelled = True  # only this request leaves; the build goes on for the others
            return
        now = time.time()
        build.updated = now
        if build.status == Status.PENDING:
            build.status, build.message, build.finished = Status.CANCELLED.value, "cancelled before it started", now
            build.current_key = None
            request.cancelled = True
        else:
            build.cancel_requested = True
            build.message = f"cancel requested by {caller.name}"


def download(db: Database, caller: Caller, filename: str) -> Build:
    """The finished build a download name belongs to, if the caller may see it (else NotFound: names do not leak)."""
    with db.reading() as session:
        query = select(Build).where(Build.filename == filename, Build.status == Status.FINISHED.value)
        if not caller.admin:
            query = query.join(Request, Request.build_id == Build.id).where(Request.user_id == caller.id)
        build = session.scalars(query.limit(1)).first()
        if build is None:
            raise NotFound(filename)
        return build


def counts(db: Database) -> Counts:
    with db.reading() as session:
        result = Counts()
        result.by_status = {status: int(count) for status, count in session.execute(
            select(Build.status, func.count()).group_by(Build.status)).all()}
        result.requests = int(session.scalar(select(func.count()).select_from(Request)) or 0)
        result.slots = int(session.scalar(select(func.count()).select_from(Slot)) or 0)
        result.busy_slots = int(session.scalar(select(func.count()).select_from(Slot)
                                               .where(Slot.build_id.is_not(None))) or 0)
        return result


def ping(db: Database) -> None:
    with db.reading() as session:
        session.execute(select(1))


# ------------------------------------------------------------------------------------------------
# The pool: slots, claims, leases
# ------------------------------------------------------------------------------------------------


def ensure_slots(db: Database, pool: int) -> None:
    """Make the slot rows 0..pool-1; free rows beyond the pool are removed (busy ones go once they free up).

    Replicas starting together may insert the same row: the loser's transaction fails on the primary key
    and its retry finds the row."""
    for attempt in range(5):
        try:
            with db.writing() as session:
                have = {slot.id: slot for slot in session.scalars(select(Slot).with_for_update())}
                for number in range(pool):
                    if number not in have:
                        session.add(Slot(id=number))
                for number, slot in have.items():
                    if number >= pool and slot.build_id is None:
                        session.delete(slot)
            return
        except IntegrityError:
            if attempt == 4:
                raise


def claim(db: Database, owner: str, lease: float, pool: int, build_id: str | None = None) -> Claimed | None:
    """Take a free slot and the oldest queued build (or the queued build `build_id`), or nothing."""
    with db.writing() as session:
        slot = session.scalars(select(Slot).where(Slot.build_id.is_(None), Slot.id < pool).order_by(Slot.id)
                               .limit(1).with_for_update(skip_locked=True)).first()
        if slot is None:
            return None
        query = select(Build).where(Build.status == Status.PENDING.value)
        if build_id is not None:
            query = query.where(Build.id == build_id)
        build = session.scalars(query.order_by(Build.created).limit(1).with_for_update(skip_locked=True)).first()
        if build is None:
            return None
        now = time.time()
        slot.build_id, slot.owner, slot.lease_expires = build.id, owner, now + lease
        build.status, build.slot, build.attempts = Status.STARTED.value, slot.id, build.attempts + 1
        build.run_id = f"svc-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{build.id[:8]}-{build.attempts}"
        build.started = build.started or now
        build.updated = now
        build.message = f"started (attempt {build.attempts}, slot {slot.id})"
        session.add(Claim(build_id=build.id, slot=slot.id, owner=owner, started=now))
        return Claimed(build.id, slot.id, build.run_id, build.image, build.arch, build.engine, build.definitions,
                       build.force, build.attempts, build.kind)


def heartbeat(db: Database, claimed: Claimed, owner: str, lease: float) -> tuple[bool, bool]:
    """Renew the lease. (still ours, cancel requested)."""
    with db.writing() as session:
        slot = session.get(Slot, claimed.slot, with_for_update=True)
        if slot is None or slot.build_id != claimed.build_id or slot.owner != owner:
            return False, False
        slot.lease_expires = time.time() + lease
        build = session.get(Build, claimed.build_id)
        return True, bool(build is not None and build.cancel_requested)


def progress(db: Database, claimed: Claimed, owner: str, status: Status, message: str) -> bool:
    """Record a step of a build this worker holds; False if the slot is no longer ours."""
    with db.writing() as session:
        slot = session.get(Slot, claimed.slot)
        if slot is None or slot.build_id != claimed.build_id or slot.owner != owner:
            return False
        build = session.get(Build, claimed.build_id)
        if build is None:
            return False
        if build.status != status.value or build.message != message:
            build.status, build.message, build.updated = status.value, message, time.time()
        return True


def finish(db: Database, claimed: Claimed, owner: str, status: Status, message: str, *,
           filename: str | None = None, sha256: str | None = None, size: int | None = None) -> bool:
    """End a build this worker holds and free its slot; False if the slot was taken from us meanwhile."""
    with db.writing() as session:
        slot = session.get(Slot, claimed.slot, with_for_update=True)
        if slot is None or slot.build_id != claimed.build_id or slot.owner != owner:
            return False
        build = session.get(Build, claimed.build_id)
        now = time.time()
        if build is not None:
            build.status, build.message, build.updated, build.finished = status.value, message, now, now
            build.slot = None
            build.current_key = build.key if status == Status.FINISHED else None
            if status == Status.FINISHED:
                build.filename, build.sha256, build.size = filename, sha256, size
        slot.build_id, slot.owner, slot.lease_expires = None, None, None
        _end_claim(session, claimed.build_id, now, status.value)
        return True


def _end_claim(session: Any, build_id: str, now: float, outcome: str) -> None:
    for open_claim in session.scalars(select(Claim).where(Claim.build_id == build_id, Claim.ended.is_(None))):
        open_claim.ended, open_claim.outcome = now, outcome


def reap(db: Database, max_attempts: int, owner_dead: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Builds whose worker is gone (lease expired, or a dead process of this host): re-queue or fail them.

    Never leaves a build active without a live lease: an active build that holds no slot at all
    (e.g. the pool shrank under it) is treated the same way.
    """
    lines: list[tuple[str, str]] = []  # (build id, what happened to it)
    now = time.time()
    with db.writing() as session:
        for slot in session.scalars(select(Slot).where(Slot.build_id.is_not(None)).with_for_update(skip_locked=True)):
            expired = slot.lease_expires is None or slot.lease_expires < now
            if not expired and not (slot.owner and owner_dead(slot.owner)):
                continue
            build = session.get(Build, slot.build_id)
            gone = f"its worker {slot.owner} stopped without finishing"
            slot.build_id, slot.owner, slot.lease_expires = None, None, None
            session.flush()
            if build is not None:
                lines.append(_lost(session, build, gone, max_attempts, now))
        held = {row for row in session.scalars(select(Slot.build_id).where(Slot.build_id.is_not(None)))}
        for build in session.scalars(select(Build).where(Build.status.in_([s.value for s in ACTIVE]))):
            if build.id not in held:
                lines.append(_lost(session, build, "it held no pool slot", max_attempts, now))
    return lines


def _lost(session: Any, build: Build, why: str, max_attempts: int, now: float) -> tuple[str, str]:
    _end_claim(session, build.id, now, "lost")
    build.slot, build.updated = None, now
    if build.status not in [s.value for s in ACTIVE]:
        return build.id, f"slot freed ({why})"
    if build.cancel_requested:
        build.status, build.message, build.finished, build.current_key = (
            Status.CANCELLED.value, f"cancelled ({why})", now, None)
    elif build.attempts < max_attempts:
        build.status = Status.PENDING.value
        build.message = f"re-queued: {why} (attempt {build.attempts} of {max_attempts})"
    else:
        build.status, build.finished, build.current_key = Status.FAILED.value, now, None
        build.message = f"failed: {why}, and it had {build.attempts} of {max_attempts} attempts"
    return build.id, build.message


def claims(db: Database) -> Sequence[Claim]:
    """Every claim so far (for audits and tests of the pool)."""
    with db.reading() as session:
        return list(session.scalars(select(Claim).order_by(Claim.started)))


def release(db: Database, claimed: Claimed, owner: str, message: str) -> bool:
    """Give a build back to the queue (the server is stopping): PENDING again, the attempt not counted."""
    with db.writing() as session:
        slot = session.get(Slot, claimed.slot, with_for_update=True)
        if slot is None or slot.build_id != claimed.build_id or slot.owner != owner:
            return False
        build = session.get(Build, claimed.build_id)
        now = time.time()
        if build is not None:
            build.status, build.message, build.slot, build.updated = Status.PENDING.value, message, None, now
            build.attempts = max(0, build.attempts - 1)
        slot.build_id, slot.owner, slot.lease_expires = None, None, None
        _end_claim(session, claimed.build_id, now, "released")
        return True
