"""Database engines and sessions, and the schema migrations (Alembic) applied at start-up.

SQLite (the default, one replica): WAL so status reads never wait for a writer, and every
writing transaction starts with `BEGIN IMMEDIATE`, so claims are serialized by SQLite itself.
Reads use a second engine with plain deferred transactions. PostgreSQL (several replicas): one
engine; claims lock their rows with `SELECT ... FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from ci.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 4_171_742  # a constant PostgreSQL advisory-lock id: replicas starting together migrate one at a time


def normalized_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (the driver this package depends on)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        make_url(url)
    except ArgumentError:
        raise ConfigError("ci.service.database is not a database URL; use sqlite:///PATH or "
                          "postgresql://USER@HOST/DB (the password in $CI_SERVICE_DATABASE_URL)") from None
    return url


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    # Enough pooled connections for the threadpool (40 threads): a connection made per request costs a few ms.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=40,
                           max_overflow=20)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is deferred and late)
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclass
class Database:
    """The service's database: `reading()` for queries, `writing()` for changes (one transaction each)."""

    url: str
    read_engine: Engine
    write_engine: Engine

    def __post_init__(self) -> None:
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)
        self._writer = sessionmaker(self.write_engine, expire_on_commit=False)

    @property
    def postgresql(self) -> bool:
        return self.write_engine.dialect.name == "postgresql"

    @classmethod
    def open(cls, url: str) -> Database:
        url = normalized_url(url)
        if url.startswith("sqlite"):
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            return cls(url, _sqlite_engine(url, immediate=False), _sqlite_engine(url, immediate=True))
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        return cls(url, engine, engine)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        with self._writer() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; replicas may call it at once)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write_engine.connect() as connection:
            if self.postgresql:
                connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK})
                connection.commit()
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                if self.postgresql:
                    connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK})
                    connection.commit()

    def close(self) -> None:
        self.read_engine.dispose()
        self.write_engine.dispose()
