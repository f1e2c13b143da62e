"""Visible stalls (issue #20 item 6a): the API says whether any worker consumes the run queue
(``GET /api/workers``), a queued run carries a ``queue_note`` when none does, and the dashboard's
run page shows it. With the Celery executor and no worker a run used to stay ``queued`` with
no sign (75 s observed). API tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.worker.status import (
    NO_WORKER_NOTE,
    CachedStatus,
    WorkerStatus,
    executor_status,
    queue_note,
)
from tests.app.api_helpers import make_settings, upload
from tests.app.fixtures_services import (  # noqa: F401
    CeleryWorker,
    PrivateRedis,
    free_port,
    kanscope_env,
    private_redis,
)

SMALL_RUN = {"target_columns": ["HV"], "feature_columns": ["Al", "Co"], "hidden": [2],
             "grid": 3, "steps": 5, "update_grid_every": 0}  # fmt: skip


def test_queue_notes() -> None:
    assert queue_note(None) is None
    assert queue_note(WorkerStatus("local", True, "0 of 2 busy")) is None
    busy = queue_note(WorkerStatus("local", True, "2 of 2 busy", busy=True))
    assert busy is not None and busy.startswith("Waiting for a free training slot")
    none = queue_note(WorkerStatus("celery", False, "no Celery worker answered a ping"))
    assert none is not None and none.startswith("No worker is running")
    assert "kanscope worker" in none and "no Celery worker answered" in none
    assert executor_status(object()) is None  # an executor that cannot tell


def test_the_status_is_cached() -> None:
    calls: list[float] = []

    def compute() -> WorkerStatus:
        calls.append(time.monotonic())
        return WorkerStatus("celery", bool(len(calls) % 2), f"call {len(calls)}")

    cached = CachedStatus(compute, ttl_s=0.3)
    assert [cached.get().detail for _ in range(5)] == ["call 1"] * 5
    time.sleep(0.35)
    assert cached.get().detail == "call 2"


def test_local_executor_always_consumes(client: Any, demo_csv: bytes) -> None:
    r = client.get("/api/workers")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["executor"] == "local" and body["consuming"] is True
    assert "KANSCOPE_MAX_CONCURRENT_RUNS" in body["detail"] and body["workers"]
    assert body["warm"] is False  # these tests' servers start no warm trainer
    ds = upload(client, demo_csv)
    run = client.post("/api/runs", json={"dataset_id": ds["id"], **SMALL_RUN}).json()
    assert client.get(f"/api/runs/{run['id']}").json()["queue_note"] is None


def test_celery_executor_with_redis_down_says_the_queue_is_unreachable() -> None:
    from app.worker.celery_executor import CeleryExecutor

    start = time.monotonic()
    status = CeleryExecutor(f"redis://:hunter2@127.0.0.1:{free_port()}/0").worker_status()
    assert time.monotonic() - start < 10
    assert status.executor == "celery" and status.consuming is False
    assert "unreachable" in status.detail and "hunter2" not in status.detail


@pytest.mark.redis
@pytest.mark.slow
def test_celery_without_a_worker_is_visible_until_one_starts(
    db_url: str,
    tmp_path: Path,
    private_redis: PrivateRedis,  # noqa: F811
    demo_csv: bytes,
) -> None:
    from app.main import create_app

    settings = make_settings(db_url, tmp_path, executor="celery", redis_url=private_redis.url)
    app = create_app(settings, mount_dashboard=False)
    worker: CeleryWorker | None = None
    try:
        with TestClient(app) as c:
            workers = c.get("/api/workers").json()
            assert workers["executor"] == "celery" and workers["consuming"] is False
            assert "no Celery worker answered" in workers["detail"]
            ds = upload(c, demo_csv)
            created = c.post("/api/runs", json={"dataset_id": ds["id"], **SMALL_RUN})
            assert created.status_code == 201, created.text
            run = c.get(f"/api/runs/{created.json()['id']}").json()
            assert run["status"] == "queued"
            assert run["queue_note"].startswith(NO_WORKER_NOTE)

            env = kanscope_env(db_url, tmp_path, private_redis.url)
            worker = CeleryWorker(env, tmp_path / "worker.log")
            worker.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                workers = c.get("/api/workers").json()
                run = c.get(f"/api/runs/{run['id']}").json()
                if workers["consuming"] and run["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.5)
            assert workers["consuming"] is True, (workers, worker.log()[-2000:])
            assert workers["workers"] and "answering" in workers["detail"]
            assert run["status"] == "succeeded", (run, worker.log()[-2000:])
            assert run["queue_note"] is None
    finally:
        if worker is not None:
            worker.stop()


def test_the_run_page_shows_the_queue_note_on_queued_runs() -> None:
    from app.dashboard import create_dash_app

    create_dash_app("http://127.0.0.1:9/api")  # pages register with an app
    from app.dashboard.pages.run import header

    note = queue_note(WorkerStatus("celery", False, "no Celery worker answered"))
    run = {"id": 3, "status": "queued", "model": "kan", "dataset_id": 1, "summary": {},
           "queue_note": note}  # fmt: skip
    text = _text(header(run, None, "demo"))
    assert "No worker is running" in text and "kanscope worker" in text
    for other in ({"status": "running"}, {"queue_note": None}):
        assert "No worker is running" not in _text(header(run | other, None, "demo"))


def _text(component: Any) -> str:
    """All text inside a Dash component tree."""
    if isinstance(component, str):
        return component
    if isinstance(component, list | tuple):
        return " ".join(_text(c) for c in component)
    children = getattr(component, "children", None)
    return _text(children) if children is not None else ""
