"""A real ``kanscope serve`` process for browser tests and the dashboard benchmark.

``ServerProcess`` starts ``python -m app.cli serve`` on a free port in its own process group with
a temporary data directory (SQLite), waits for ``/api/health`` and kills the group in ``stop()``
(training runs in child processes). Kept out of ``conftest.py`` so that it can be imported by
name (several directories have a ``conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.app.api_helpers import FINISHED

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("KANSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
DEMO_CSV = REPO / "app" / "demo_data" / "Gorsse2018ML_Data_RawHV.csv"
VIEWPORT = {"width": 1280, "height": 800}


def wait_for_warm_trainer(api: httpx.Client, timeout_s: float = 180.0) -> None:
    """Until the server's warm trainer (a process with torch imported, waiting for a run) is
    ready, as it is for a user who clicks Train seconds after the last run started."""
    deadline = time.monotonic() + timeout_s
    while not api.get("/workers").json().get("warm"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no warm trainer after {timeout_s:.0f} s")
        time.sleep(0.2)


def wait_for_run(api: httpx.Client, run_id: int, timeout_s: float = 180.0) -> dict[str, Any]:
    """Until the run has finished; the run as the API then shows it."""
    deadline = time.monotonic() + timeout_s
    while (run := api.get(f"/runs/{run_id}").json())["status"] not in FINISHED:
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run['status']} after {timeout_s:.0f} s")
        time.sleep(0.2)
    return dict(run)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``kanscope serve`` in a temp data dir; ``url`` is its root, ``api`` an httpx client."""

    def __init__(
        self,
        data_dir: Path,
        env_extra: dict[str, str] | None = None,
        kanscope: list[str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        """``kanscope``: the command to run (default: this checkout's ``python -m app.cli``)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = data_dir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KANSCOPE_")}
        env.update(
            KANSCOPE_DATA_DIR=str(data_dir),
            KANSCOPE_EXECUTOR="local",
            KANSCOPE_LOAD_DEMO="false",
            KANSCOPE_WARM_KERNELS="false",  # the session filled the caches (tests/conftest.py)
            PYTHONUNBUFFERED="1",
        )
        env.update(env_extra or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                *(kanscope or [sys.executable, "-m", "app.cli"]),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends trainers too
        )
        self.api = httpx.Client(base_url=f"{self.url}/api", timeout=30.0)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kanscope serve exited early:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.api.get("/health", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError(f"/api/health did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        self.api.close()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


class RunningServer:
    """A server someone else started (``KANSCOPE_E2E_URL``), for debugging the tests."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.api = httpx.Client(base_url=f"{self.url}/api", timeout=30.0)
