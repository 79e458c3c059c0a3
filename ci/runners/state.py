"""The allocator's memory: one SQLite file in its state folder, and a single-instance lock.

Each runner is one row, written *before* anything is asked of GitHub or Slurm (phase
`creating`), so a process killed at any point leaves a row the next start can finish or undo:
a Slurm job of that name is adopted, a registered GitHub runner without one is deleted. The
truth stays outside (squeue, GitHub's runner list); the rows only say what we meant to do.
SQLite in WAL mode lets `inv runners.status` read while `serve` writes.

The lock is `flock` on `<state>/lock`: the kernel releases it when the holder dies, even by
kill -9, so a restart never has to guess whether a stale lock file is safe to break.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci.errors import CIError
from ci.runners.logic import Phase, RunnerView

SCHEMA = """
CREATE TABLE IF NOT EXISTS runners (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    phase TEXT NOT NULL,
    github_id INTEGER,
    job_id TEXT,
    created REAL NOT NULL,
    submitted REAL,
    idle_since REAL,
    ended REAL,
    used INTEGER NOT NULL DEFAULT 0,
    github_gone INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runners_phase ON runners (phase);
CREATE TABLE IF NOT EXISTS snapshot (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

LIVE = tuple(phase.value for phase in Phase if phase.live)


class LockHeld(CIError):
    """Another allocator serves this state folder."""


@dataclass
class Runner:
    name: str
    target: str
    phase: Phase
    github_id: int | None
    job_id: str | None
    created: float
    submitted: float | None
    idle_since: float | None
    ended: float | None
    used: bool
    github_gone: bool
    note: str

    def view(self) -> RunnerView:
        return RunnerView(self.name, self.target, self.phase, self.created, self.idle_since)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "phase": self.phase.value, "github_id": self.github_id,
                "job_id": self.job_id, "created": self.created, "submitted": self.submitted,
                "idle_since": self.idle_since, "ended": self.ended, "used": self.used, "note": self.note}


class State:
    """The runner rows and the last poll's snapshot."""

    def __init__(self, folder: Path, *, readonly: bool = False):
        self.folder = folder
        self.path = folder / "state.db"
        if readonly:
            if not self.path.exists():
                raise CIError(f"no allocator state in {folder} yet; `inv runners.serve` creates it")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
        else:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)  # one user at a time
            self.db.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL: a commit survives the process being killed (only a power
            # loss can drop the last ones), without an fsync on every poll.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self.db.commit()
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    # -- rows ---------------------------------------------------------------------------------

    @staticmethod
    def _runner(row: sqlite3.Row) -> Runner:
        return Runner(row["name"], row["target"], Phase(row["phase"]), row["github_id"], row["job_id"],
                      row["created"], row["submitted"], row["idle_since"], row["ended"], bool(row["used"]),
                      bool(row["github_gone"]), row["note"])

    def live(self) -> list[Runner]:
        marks = ",".join("?" * len(LIVE))
        rows = self.db.execute(f"SELECT * FROM runners WHERE phase IN ({marks}) ORDER BY created", LIVE)
        return [self._runner(row) for row in rows]

    def all(self, limit: int = 10000) -> list[Runner]:
        rows = self.db.execute("SELECT * FROM runners ORDER BY created DESC LIMIT ?", (limit,))
        return [self._runner(row) for row in rows]

    def get(self, name: str) -> Runner | None:
        row = self.db.execute("SELECT * FROM runners WHERE name = ?", (name,)).fetchone()
        return self._runner(row) if row else None

    def ended_needing_cleanup(self) -> list[Runner]:
        """Ended runners whose GitHub registration may still exist (deleted, or found gone)."""
        rows = self.db.execute("SELECT * FROM runners WHERE phase NOT IN ({}) AND github_gone = 0 "
                               "AND github_id IS NOT NULL".format(",".join("?" * len(LIVE))), LIVE)
        return [self._runner(row) for row in rows]

    def insert(self, runners: list[tuple[str, str]], now: float) -> None:
        """New rows in phase `creating`, committed before GitHub or Slurm hears of them."""
        self.db.executemany("INSERT INTO runners (name, target, phase, created) VALUES (?, ?, ?, ?)",
                            [(name, target, Phase.CREATING.value, now) for name, target in runners])
        self.db.commit()

    def adopt(self, name: str, target: str, job_id: str, phase: Phase, now: float, note: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO runners (name, target, phase, job_id, created, submitted, note) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (name, target, phase.value, job_id, now, now, note))
        self.db.commit()

    def update(self, name: str, **values: Any) -> None:
        if not values:
            return
        columns = ", ".join(f"{key} = ?" for key in values)
        data = [value.value if isinstance(value, Phase) else value for value in values.values()]
        self.db.execute(f"UPDATE runners SET {columns} WHERE name = ?", (*data, name))

    def commit(self) -> None:
        self.db.commit()

    def prune(self, older_than: float) -> int:
        """Forget finished runners ended before `older_than` (their GitHub registration is gone)."""
        marks = ",".join("?" * len(LIVE))
        cursor = self.db.execute(f"DELETE FROM runners WHERE phase NOT IN ({marks}) AND ended IS NOT NULL "
                                 "AND ended < ? AND (github_gone = 1 OR github_id IS NULL)", (*LIVE, older_than))
        self.db.commit()
        return cursor.rowcount

    def counts(self) -> dict[str, dict[str, int]]:
        """target -> phase -> number of rows."""
        result: dict[str, dict[str, int]] = {}
        for row in self.db.execute("SELECT target, phase, COUNT(*) AS n FROM runners GROUP BY target, phase"):
            result.setdefault(row["target"], {})[row["phase"]] = row["n"]
        return result

    # -- snapshot -----------------------------------------------------------------------------

    def save_snapshot(self, data: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO snapshot (key, value) VALUES ('last', ?)",
                        (json.dumps(data, default=str),))
        self.db.commit()

    def snapshot(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT value FROM snapshot WHERE key = 'last'").fetchone()
        return json.loads(row["value"]) if row else None


@contextmanager
def single_instance(folder: Path) -> Iterator[None]:
    """Hold `<folder>/lock` for the block; LockHeld names the holder when another process has it."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeld(f"another allocator holds {path} ({holder}); stop it first (systemctl stop ...), "
                           "or point ci.runners.state_dir elsewhere") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)


def lock_holder(folder: Path) -> str | None:
    """Who serves this folder right now (None when nobody holds the lock)."""
    path = folder / "lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
