"""Shared fixtures: databases (a SQLite file and a private schema on the machine's PostgreSQL),
settings, an in-process app client and a real ``kanscope serve`` process.

PostgreSQL tests never skip: if the server at KANSCOPE_TEST_POSTGRES_URL (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) is unreachable they fail, unless the
environment says ``KANSCOPE_TEST_POSTGRES=skip`` explicitly (never in CI). Each test session
works in its own schema (``kanscope_test_<random>``), dropped at the end, so parallel sessions
on the same server do not collide.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# pytest puts tests/ on sys.path for this file, which would make tests/app a namespace package
# called "app"; with the repository root on sys.path the real (regular) package always wins.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "app"))
from api_helpers import LiveServer, make_settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO_CSV = REPO / "app" / "demo_data" / "Gorsse2018ML_Data_RawHV.csv"
PG_BASE_URL = os.environ.get(
    "KANSCOPE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
FINISHED = ("succeeded", "failed", "cancelled")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fill numba's on-disk kernel cache once, before tests spawn training processes that
    would otherwise each compile the kernels (~10 s) on a fresh checkout."""
    import subprocess

    subprocess.run([sys.executable, "-m", "kan_core.fused"], check=True, timeout=600)


def _pg_skip_allowed() -> bool:
    return os.environ.get("KANSCOPE_TEST_POSTGRES") == "skip" and not os.environ.get("CI")


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A fresh schema on the shared PostgreSQL, migrated to head; dropped after the session."""
    from sqlalchemy import create_engine, text

    from app.db.migrate import upgrade

    schema = f"kanscope_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # unreachable server: fail loudly (skip only when asked)
        admin.dispose()
        if _pg_skip_allowed():
            pytest.skip(f"PostgreSQL unreachable and KANSCOPE_TEST_POSTGRES=skip: {exc}")
        pytest.fail(
            f"PostgreSQL at {PG_BASE_URL} is unreachable ({type(exc).__name__}: {exc}). "
            "These tests must run; start PostgreSQL or set KANSCOPE_TEST_POSTGRES_URL.",
            pytrace=False,
        )
    sep = "&" if "?" in PG_BASE_URL else "?"
    url = f"{PG_BASE_URL}{sep}options=-csearch_path%3D{schema}"
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


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or the session's PostgreSQL schema."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_url")  # its teardown forgets the engines
        return
    from app.db.migrate import upgrade
    from app.db.session import forget_databases

    url = f"sqlite:///{tmp_path / 'kanscope.sqlite3'}"
    upgrade(url)
    yield url
    forget_databases()


@pytest.fixture
def pg_url(pg_schema_url: str) -> Iterator[str]:
    """The session's PostgreSQL schema, migrated and empty: for what only PostgreSQL does."""
    _truncate_all(pg_schema_url)
    yield pg_schema_url
    from app.db.session import forget_databases

    forget_databases()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    from app.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'kanscope.sqlite3'}"
    upgrade(url)
    return url


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
