"""The local executor's spare trainer (``KANSCOPE_WARM_TRAINER``): a process started ahead,
with torch and the trainer imported, takes the next run, and another spare is started behind
it. Real processes, real SQLite."""

from __future__ import annotations

import time

import pytest

from tests.app.api_helpers import make_settings, upload, wait_for

pytestmark = pytest.mark.slow


def wait_for_spare(executor, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spare = executor._spare
        if spare is not None and spare[0].is_alive():
            return spare[0].pid
        time.sleep(0.1)
    raise TimeoutError("no spare trainer was started")


def test_a_spare_trainer_takes_the_next_run_and_is_replaced(sqlite_url, tmp_path, demo_csv):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(sqlite_url, tmp_path, warm_trainer=True)
    with TestClient(create_app(settings, mount_dashboard=False)) as client:
        executor = client.app.state.executor
        spare_pid = wait_for_spare(executor)
        assert client.get("/api/workers").json()["warm"] is False  # still importing torch
        started = time.monotonic()
        # its imports done, as between a user's clicks; the API says so
        while not client.get("/api/workers").json()["warm"]:
            assert time.monotonic() - started < 120, "the spare trainer never got ready"
            time.sleep(0.1)
        assert "a warm trainer is ready" in client.get("/api/workers").json()["detail"]
        print(f"spare trainer ready after {time.monotonic() - started:.1f} s")
        ds = upload(client, demo_csv, "warm.csv")
        body = {"dataset_id": ds["id"], "target_columns": ["HV"], "feature_columns": ["VEC"],
                "hidden": [2], "steps": 20}  # fmt: skip
        submitted = time.monotonic()
        run = client.post("/api/runs", json=body).json()
        done = wait_for(client, run["id"], timeout=120)
        assert done["status"] == "succeeded", done.get("error")
        assert done["owner"].endswith(f":pid{spare_pid}")  # the spare trained it
        print(f"submitted → succeeded with a warm trainer: {time.monotonic() - submitted:.2f} s")
        assert wait_for_spare(executor) != spare_pid  # and a new one waits for the next run


def test_a_run_handed_to_a_spare_still_importing_is_trained(sqlite_url, tmp_path, demo_csv):
    """The run reaches the spare before it is ready (the executor has already closed its end of
    the pipe when the spare says "ready"): it must still be trained, never left queued."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(sqlite_url, tmp_path, warm_trainer=True)
    with TestClient(create_app(settings, mount_dashboard=False)) as client:
        executor = client.app.state.executor
        spare_pid = wait_for_spare(executor)
        assert not executor.spare_ready()  # just started: still importing torch
        ds = upload(client, demo_csv, "early.csv")
        body = {"dataset_id": ds["id"], "target_columns": ["HV"], "feature_columns": ["VEC"],
                "hidden": [2], "steps": 5}  # fmt: skip
        run = client.post("/api/runs", json=body).json()
        done = wait_for(client, run["id"], timeout=180)
        assert done["status"] == "succeeded", done.get("error")
        assert done["owner"].endswith(f":pid{spare_pid}")
