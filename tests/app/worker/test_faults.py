"""Faults in the embedded setup (``kanscope serve`` with the local executor on a SQLite file):
the API process SIGKILLed while its training processes run, then started again.

(The distributed faults — worker SIGKILL, duplicate delivery, PostgreSQL and API restarts,
Redis down — are in test_celery_integration.py.)
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.fixtures_services import ApiServer, kanscope_env

pytestmark = pytest.mark.slow

FINISHED = ("succeeded", "failed", "cancelled")


def _csv(n: int = 60) -> bytes:
    rows = ["a,b,y"] + [f"{k % 7 / 3 - 1:.3f},{k % 5 / 2 - 1:.3f},{k % 7 * k % 5 / 9:.3f}"
                        for k in range(n)]  # fmt: skip
    return ("\n".join(rows) + "\n").encode()


def _wait(http: httpx.Client, run_id: int, until: tuple[str, ...], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = http.get(f"/runs/{run_id}").json()
        if run["status"] in until:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} not {until} after {timeout}s: {run}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def test_api_killed_while_local_runs_train_leaves_no_run_stuck(tmp_path: Path) -> None:
    env = kanscope_env(
        f"sqlite:///{tmp_path / 'kanscope.sqlite3'}", tmp_path, executor="local",
        heartbeat_interval_s=0.5, lease_s=4.0, reaper_interval_s=1.0, max_concurrent_runs=2,
    )  # fmt: skip
    api = ApiServer(env, tmp_path / "api1.log")
    api2: ApiServer | None = None
    try:
        api.start()
        with httpx.Client(base_url=api.url, timeout=30) as http:
            ds = http.post("/datasets", files={"file": ("d.csv", _csv(), "text/csv")}).json()
            body = {"dataset_id": ds["id"], "target_columns": ["y"], "hidden": [2], "grid": 3}
            # 100 000 steps: the fused engine trains this small net at thousands of steps per
            # second on an idle machine, and the run must still be going when the API is killed
            long_body = body | {"steps": 100_000, "early_stopping_patience": None}
            long = http.post("/runs", json=long_body).json()
            done_before = http.post("/runs", json=body | {"steps": 5}).json()
            assert _wait(http, done_before["id"], FINISHED)["status"] == "succeeded"
            running = _wait(http, long["id"], ("running",))
            deadline = time.monotonic() + 60
            while (http.get(f"/runs/{long['id']}/metrics").json()["last_step"] or 0) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            trainer_pid = int(re.search(r"pid(\d+)", running["owner"]).group(1))  # type: ignore[union-attr]

        os.kill(api.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]  # only the server
        api.proc.wait(10)  # type: ignore[union-attr]
        # the orphaned training process notices its parent is gone and stops by itself
        deadline = time.monotonic() + 20
        while _alive(trainer_pid):
            assert time.monotonic() < deadline, "the orphaned trainer kept running"
            time.sleep(0.2)

        api2 = ApiServer(env, tmp_path / "api2.log", port=api.port)
        api2.start()
        with httpx.Client(base_url=api2.url, timeout=30) as http:
            failed = _wait(http, long["id"], FINISHED, timeout=30)
            assert failed["status"] == "failed", failed
            assert "server stopped" in failed["error"] or "heartbeat" in failed["error"], failed
            # nothing lost: the dataset, the finished run and the killed run's metrics remain
            assert http.get(f"/datasets/{ds['id']}").json()["n_rows"] == 60
            assert http.get(f"/runs/{done_before['id']}").json()["status"] == "succeeded"
            assert http.get(f"/runs/{done_before['id']}/network").status_code == 200
            assert http.get(f"/runs/{long['id']}/metrics").json()["last_step"] >= 3
            # and the restarted server takes new work (cancelled at once: no need to train it)
            again = http.post("/runs", json=body | {"steps": 5})
            assert again.status_code == 201, again.text
            http.post(f"/runs/{again.json()['id']}/cancel")
            assert _wait(http, again.json()["id"], FINISHED)["status"] in ("cancelled", "succeeded")
    finally:
        api.stop()
        if api2 is not None:
            api2.stop()
