"""Private PostgreSQL and Redis servers for tests that stop, restart or break a server.

Each instance lives in its own temporary directory on a free port and is stopped (and its
directory removed) by whoever started it, so the machine's shared services on 5432 / 6379 are
never touched. PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` system user (``runuser``) in a directory owned by it.

Use as context managers or through the pytest fixtures at the bottom::

    with PrivatePostgres() as pg, PrivateRedis() as redis:
        pg.url      # postgresql+psycopg://postgres@127.0.0.1:<port>/kanscope
        redis.url   # redis://127.0.0.1:<port>/0
        pg.restart(); redis.stop(); redis.start()
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "PrivatePostgres",
    "PrivateRedis",
    "ServiceUnavailable",
    "free_port",
    "private_postgres",
    "private_redis",
    "wait_for_port",
]


class ServiceUnavailable(RuntimeError):
    """The binaries needed to start a private server are not on this machine."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 20.0, *, open_: bool = True) -> None:
    """Wait until ``port`` accepts connections (or, with ``open_=False``, until it refuses)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port) == open_:
            return
        time.sleep(0.05)
    state = "accept" if open_ else "refuse"
    raise TimeoutError(f"port {port} did not {state} connections within {timeout:.0f}s")


def _pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    found = candidates[0] if candidates else shutil.which(name)
    if not found:
        raise ServiceUnavailable(f"PostgreSQL binary {name!r} not found")
    return found


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (trust auth, fsync off) on a free port."""

    def __init__(self, port: int | None = None, database: str = "kanscope") -> None:
        self.port = port or free_port()
        self.database = database
        self._initdb = _pg_bin("initdb")
        self._pg_ctl = _pg_bin("pg_ctl")
        self._as_postgres = os.geteuid() == 0
        # Not under pytest's tmp_path: that is private to root and the postgres user must enter.
        self.root = Path(tempfile.mkdtemp(prefix="kanscope-pg-"))
        self.root.chmod(0o755)
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self._initialised = False

    # -- helpers ---------------------------------------------------------------------------
    def _run(self, args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else args
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def _check(self, proc: subprocess.CompletedProcess[str], what: str) -> None:
        if proc.returncode != 0:
            log = ""
            if self.log_file.exists():
                log = self.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}\n{log}")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def running(self) -> bool:
        return port_open(self.port)

    # -- lifecycle -------------------------------------------------------------------------
    def init(self) -> None:
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        proc = self._run(
            [self._initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
        )  # fmt: skip
        self._check(proc, "initdb")
        self._initialised = True

    def start(self, timeout: float = 30.0) -> None:
        if not self._initialised:
            self.init()
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        proc = self._run(
            [self._pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
             "-w", "-t", str(int(timeout)), "start"],
            timeout=timeout + 10,
        )  # fmt: skip
        self._check(proc, "pg_ctl start")
        wait_for_port(self.port, timeout)
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart | fast | immediate). No-op when not running."""
        if not self._initialised or not (self.data_dir / "postmaster.pid").exists():
            return
        proc = self._run([self._pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "stop"])
        self._check(proc, "pg_ctl stop")
        wait_for_port(self.port, 10, open_=False)

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        self.stop(mode)
        if down_for:
            time.sleep(down_for)
        self.start()

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class PrivateRedis:
    """A throw-away ``redis-server`` without persistence on a free port."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise ServiceUnavailable("redis-server not found")
        self._binary = binary
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="kanscope-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root), "--daemonize", "no",
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Keys are lost: nothing is persisted."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        wait_for_port(self.port, 5, open_=False)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server for one test (skipped when the binaries are missing)."""
    try:
        server = PrivatePostgres()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A private Redis server for one test (skipped when redis-server is missing)."""
    try:
        server = PrivateRedis()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


# ── kanscope processes (API server, Celery worker) ────────────────────────────────────────────

REPO_ROOT = Path(__file__).resolve().parents[2]


def kanscope_env(
    database_url: str, data_dir: Path, redis_url: str | None = None, **settings: object
) -> dict[str, str]:
    """Environment for a kanscope subprocess: ``KANSCOPE_*`` from keyword arguments."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANSCOPE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["KANSCOPE_DATABASE_URL"] = database_url
    env["KANSCOPE_DATA_DIR"] = str(data_dir)
    env["KANSCOPE_LOAD_DEMO"] = "false"
    if redis_url is not None:
        env["KANSCOPE_REDIS_URL"] = redis_url
    for key, value in settings.items():
        env[f"KANSCOPE_{key.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


class KanscopeProcess:
    """``python -m app.cli <args>`` in its own process group, output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_file: Path) -> None:
        self.args, self.env, self.log_file = args, env, log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", *self.args]

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches its children
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (the server and its children)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill(signal.SIGKILL)  # stragglers in the group (pool children, local trainers)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if not self.alive:
                raise RuntimeError(f"{self.args[0]} exited:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not in the {self.args[0]} log:\n{self.log()[-3000:]}")


class CeleryWorker(KanscopeProcess):
    """``kanscope worker`` on the gpu queue (prefork pool, one child)."""

    def __init__(self, env: dict[str, str], log_file: Path, extra: list[str] | None = None):
        super().__init__(["worker", *(extra or [])], env, log_file)

    def start(self, timeout: float = 40.0) -> None:
        super().start()
        self.wait_for_log("ready.", timeout)

    def child_pids(self) -> list[int]:
        """Pool child processes (the ones that run tasks)."""
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


class ApiServer(KanscopeProcess):
    """``kanscope serve`` on a free port; ``url`` is the API base (…/api)."""

    def __init__(self, env: dict[str, str], log_file: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard",
                "--no-demo", "--log-level", "warning"]  # fmt: skip
        super().__init__(args, env, log_file)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float = 60.0) -> None:
        import httpx

        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"serve exited:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"API not healthy within {timeout:.0f}s:\n{self.log()[-3000:]}")
