"""Shared fixtures: databases (a SQLite file and a private schema on PostgreSQL), the
session's Redis, settings, an in-process app client and a real ``kanscope serve`` process.

PostgreSQL and Redis tests never skip. The session uses the servers at
KANSCOPE_TEST_POSTGRES_URL (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and
KANSCOPE_TEST_REDIS_URL (default ``redis://127.0.0.1:6379/0``) when they answer; when one does
not, it starts a private one for the session (``fixtures_services``: the system's binaries, or
the dev extra's wheels) and stops it at the end. Each test session works in its own schema
(``kanscope_test_<random>``), dropped at the end, so parallel sessions on one server do not
collide.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.api_helpers import LiveServer, make_settings
from tests.app.fixtures_services import (
    PrivatePostgres,
    PrivateRedis,
    postgres_answers,
    redis_answers,
)

REPO = Path(__file__).resolve().parent.parent
DEMO_CSV = REPO / "app" / "demo_data" / "Gorsse2018ML_Data_RawHV.csv"
PG_BASE_URL = os.environ.get(
    "KANSCOPE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("KANSCOPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fill numba's on-disk kernel cache once, before tests spawn training processes that
    would otherwise each compile the kernels (~10 s) on a fresh checkout. Under xdist the
    controller does it before it starts the workers; the servers the tests start skip their
    own background fill (KANSCOPE_WARM_KERNELS=false in their environments)."""
    import subprocess

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        subprocess.run([sys.executable, "-m", "kan_core.fused"], check=True, timeout=600)
    else:  # workers share the cores: one thread each
        import torch

        torch.set_num_threads(1)


SERVICES: dict[str, str] = {}  # what the session used, for the terminal summary


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, where in SERVICES.items():
        terminalreporter.write_line(f"{name}: {where}")


def _configured_or_private(
    name: str, url: str, answers: Callable[[str], bool], start_private: Callable[[], Any]
) -> Iterator[str]:
    """``url`` when its server answers, else a private server (stopped when the session ends)."""
    if answers(url):
        SERVICES[name] = f"configured, {url}"
        yield url
        return
    with start_private() as server:
        SERVICES[name] = f"private to the session, {server.url} from {server.binaries}"
        yield server.url


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """KANSCOPE_TEST_POSTGRES_URL when it answers, else a private server for the session."""
    yield from _configured_or_private(
        "PostgreSQL", PG_BASE_URL, postgres_answers, lambda: PrivatePostgres(database="test")
    )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """KANSCOPE_TEST_REDIS_URL when it answers, else a private server for the session."""
    yield from _configured_or_private("Redis", REDIS_URL, redis_answers, PrivateRedis)


@pytest.fixture(scope="session")
def pg_schema_url(pg_server_url: str) -> Iterator[str]:
    """A fresh schema on the session's PostgreSQL, migrated to head; dropped after the session."""
    from sqlalchemy import create_engine, text

    from app.db.migrate import upgrade

    schema = f"kanscope_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_server_url else "?"
    url = f"{pg_server_url}{sep}options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _truncate_all(url: str) -> None:
    from sqlalchemy import create_engine, text

    from app.db.models import Base

    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests get copies (a copy takes
    ~0.1 ms, a migration ~0.1 s)."""
    from app.db.migrate import upgrade
    from app.db.session import forget_databases

    path = tmp_path_factory.mktemp("sqlite-template") / "kanscope.sqlite3"
    upgrade(f"sqlite:///{path}")
    forget_databases()
    return path


def _sqlite_copy(template: Path, tmp_path: Path) -> str:
    target = tmp_path / "kanscope.sqlite3"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or the session's PostgreSQL schema."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_url")  # its teardown forgets the engines
        return
    from app.db.session import forget_databases

    yield _sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)
    forget_databases()


@pytest.fixture
def pg_url(pg_schema_url: str) -> Iterator[str]:
    """The session's PostgreSQL schema, migrated and empty: for what only PostgreSQL does."""
    _truncate_all(pg_schema_url)
    yield pg_schema_url
    from app.db.session import forget_databases

    forget_databases()


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return _sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Any:
    return make_settings(db_url, tmp_path)


@pytest.fixture
def client(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app in-process (TestClient) with its local executor (real training processes)."""
    from fastapi.testclient import TestClient

    from app.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("KANSCOPE_DATABASE_URL", settings.effective_database_url)
    get_settings.cache_clear()
    app = create_app(settings, mount_dashboard=False)
    with TestClient(app) as c:
        yield c
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def demo_csv() -> bytes:
    return DEMO_CSV.read_bytes()


@pytest.fixture
def live_server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        server = LiveServer(tmp_path, env)
        servers.append(server)
        server.wait_healthy()
        return server

    yield start
    for server in servers:
        server.stop()
