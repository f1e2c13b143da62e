"""Helpers for the app tests (imported by tests/conftest.py and the test modules)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
FINISHED = ("succeeded", "failed", "cancelled")


def make_settings(url: str, data_dir: Path, **overrides: Any) -> Any:
    from app.config import Settings

    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": url,
        "load_demo": False,
        "migrate_on_start": False,
        "heartbeat_interval_s": 0.5,
        "lease_s": 30.0,
        "reaper_interval_s": 2.0,
        "max_concurrent_runs": 2,
        "max_upload_bytes": 10 * 1024 * 1024,
        # a spare trainer per test app would cost each test a torch start-up in CPU;
        # test_warm_trainer.py turns it on
        "warm_trainer": False,
    }
    values.update(overrides)
    return Settings(**values)


def upload(client: Any, content: bytes, name: str = "data.csv") -> dict[str, Any]:
    r = client.post("/api/datasets", files={"file": (name, content, "text/csv")})
    assert r.status_code == 201, r.text
    return r.json()


def wait_for(
    client: Any, run_id: int, statuses: tuple[str, ...] = FINISHED, timeout: float = 120.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run.get("status") in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not reach {statuses} in {timeout}s: {run}")


def make_run(db: Any, status: str = "queued", **kw: Any) -> int:
    """A run row (and a dataset row if there is none) written straight to the database."""
    from sqlalchemy import select

    from app.db.models import Dataset, Run

    with db.write() as s:
        ds = s.scalars(select(Dataset)).first()
        if ds is None:
            ds = Dataset(name="d", n_rows=0, n_columns=0, size_bytes=0, columns=[], content=b"")
            s.add(ds)
            s.flush()
        run = Run(
            dataset_id=ds.id,
            model="kan",
            task="regression",
            status=status,
            config={"target_columns": ["y"]},
            summary={},
            **kw,
        )
        s.add(run)
        s.flush()
        return run.id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``python -m app.cli serve`` on a free port, its own process group (API only, unless
    ``dashboard``)."""

    def __init__(self, data_dir: Path, env_extra: dict[str, str], dashboard: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KANSCOPE_")}
        env.update(
            KANSCOPE_DATA_DIR=str(data_dir),
            KANSCOPE_LOAD_DEMO="false",
            KANSCOPE_WARM_KERNELS="false",  # the session filled the caches (tests/conftest.py)
            PYTHONUNBUFFERED="1",
        )
        env.update(env_extra)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                *([] if dashboard else ["--no-dashboard"]),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self, timeout: float = 90.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not healthy:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def local_sqlite_client(data_dir: Path) -> Iterator[Any]:
    """An in-process app (API only) on a SQLite file in ``data_dir`` with a real local executor
    (two trainers, fast heartbeats, no spare trainer): for module-scoped fixtures."""
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    settings = Settings(
        data_dir=data_dir,
        database_url=None,
        executor="local",
        load_demo=False,
        max_concurrent_runs=2,
        heartbeat_interval_s=0.5,
        warm_trainer=False,
    )
    with TestClient(create_app(settings, mount_dashboard=False)) as client:
        yield client
