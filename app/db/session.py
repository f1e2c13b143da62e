"""Engine and sessions. SQLite: WAL, a busy timeout, foreign keys and ``BEGIN IMMEDIATE`` for
writing transactions, so concurrent trainers and API writes queue instead of failing with
"database is locked". PostgreSQL: plain READ COMMITTED with pre-ping; a writing transaction
may cap how long it can sit idle (``stall_limit_s``) so that a stalled process cannot hold its row
locks for ever.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.extras import require

_IMMEDIATE = "kanscope_sqlite_immediate"


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver we install)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(_IMMEDIATE, False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def make_engine(url: str, busy_timeout_ms: int = 30_000) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            from pathlib import Path

            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout_ms / 1000.0, "check_same_thread": False},
            pool_size=10,
            max_overflow=20,
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    if parsed.get_driver_name() == "psycopg":
        require("psycopg", "A PostgreSQL database URL")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """One engine and two session factories: reading (plain BEGIN) and writing (IMMEDIATE)."""

    def __init__(self, url: str, busy_timeout_ms: int = 30_000) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, busy_timeout_ms)
        self.dialect = self.engine.dialect.name
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(**{_IMMEDIATE: True}), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def session(self, write: bool = False) -> Session:
        return self._write() if write else self._read()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as s:
            yield s

    @contextmanager
    def write(self, stall_limit_s: float | None = None) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on error.

        ``stall_limit_s`` (PostgreSQL): the server ends the session if the transaction sits
        idle that long between statements, which releases its locks. A worker frozen in the
        middle of a write (SIGSTOP, swapped out, a long GC pause) would otherwise keep the run's
        row locked and the reaper waiting on it; awake again, its next statement fails and its
        ownership check tells it that it lost the run. SQLite has no server to do this."""
        with self._write() as s, s.begin():
            if stall_limit_s is not None and not self.is_sqlite:
                s.execute(
                    text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"),
                    {"ms": str(max(1, round(stall_limit_s * 1000)))},
                )
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


_databases: dict[str, Database] = {}
_lock = threading.Lock()


def get_database(url: str | None = None) -> Database:
    """The process-wide Database for ``url`` (default: from settings)."""
    if url is None:
        from app.config import get_settings

        settings = get_settings()
        url = settings.effective_database_url
        timeout = settings.sqlite_busy_timeout_ms
    else:
        timeout = 30_000
    key = normalise_url(url)
    with _lock:
        db = _databases.get(key)
        if db is None:
            db = _databases[key] = Database(key, timeout)
        return db


def forget_databases() -> None:
    """Dispose cached engines (tests; after fork)."""
    with _lock:
        for db in _databases.values():
            db.dispose()
        _databases.clear()


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched. (SQLAlchemy 2.1 types ``Session.execute`` as a plain
    ``Result``; a DML statement's result is a ``CursorResult``, which has the count.)"""
    return cast("CursorResult[Any]", result).rowcount
