"""The executor contract at the service level, on SQLite and PostgreSQL: one claim wins, the
reaper fails (or requeues once) runs whose heartbeat stopped, start-up repair, and SQLite
writers that never see "database is locked"."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import DBAPIError

from app.db.clock import utcnow, utcnow_minus
from app.db.models import Run, RunMetric
from app.db.session import Database
from app.services.run_claims import claim_run, reap_stale_runs
from app.services.run_sink import METRIC_ROWS_PER_INSERT, insert_metrics
from app.services.training import run_training
from tests.app.api_helpers import make_run


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    yield database
    database.dispose()


def test_only_one_claim_wins(db):
    run_id = make_run(db)
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def claim(k: int) -> None:
        barrier.wait()
        with db.write() as s:
            wins.append(claim_run(s, run_id, f"worker-{k}"))

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]
    with db.read() as s:
        run = s.get(Run, run_id)
        assert run.status == "running" and run.attempts == 1 and run.heartbeat_at is not None


def test_duplicate_delivery_is_skipped(db):
    run_id = make_run(db, status="running", owner="someone-else")
    assert run_training(run_id, "late-duplicate", db=db) == "skipped"
    assert run_training(999_999, "ghost", db=db) == "skipped"
    with db.read() as s:
        assert s.get(Run, run_id).owner == "someone-else"


def test_reaper_fails_stale_runs_by_database_clock(db):
    stale = make_run(db, status="running", owner="dead-worker", attempts=1)
    fresh = make_run(db, status="running", owner="live-worker", attempts=1)
    with db.write() as s:
        s.execute(update(Run).where(Run.id == stale).values(heartbeat_at=utcnow_minus(600)))
        s.execute(update(Run).where(Run.id == fresh).values(heartbeat_at=utcnow()))
    assert reap_stale_runs(db, lease_s=60) == [(stale, "failed")]
    with db.read() as s:
        dead = s.get(Run, stale)
        assert dead.status == "failed" and "heartbeats" in dead.error and dead.finished_at
        assert s.get(Run, fresh).status == "running"
    assert reap_stale_runs(db, lease_s=60) == []


def test_reaper_requeues_once_then_fails(db):
    run_id = make_run(db, status="running", owner="w1", attempts=1)
    with db.write() as s:
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600)))
    assert reap_stale_runs(db, lease_s=60, requeue=True) == [(run_id, "queued")]
    with db.write() as s:
        assert claim_run(s, run_id, "w2")
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600)))
    assert reap_stale_runs(db, lease_s=60, requeue=True) == [(run_id, "failed")]


def test_a_worker_frozen_mid_write_cannot_keep_the_reaper_waiting(pg_url):
    """PostgreSQL: a worker stalled inside a write transaction (after its heartbeat UPDATE took
    the run's row lock) loses the session after ``stall_limit_s``; the reaper, waiting on that
    lock, then requeues the run, and the stalled worker's commit fails instead of landing."""
    db = Database(pg_url)
    try:
        run_id = make_run(db, status="running", owner="frozen", attempts=1)
        with db.write() as s:
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600)))
        locked, outcome = threading.Event(), []

        def frozen_worker() -> None:
            try:
                with db.write(stall_limit_s=1.0) as s:
                    s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))
                    locked.set()
                    time.sleep(3.0)  # frozen between statements: the server ends the session
                outcome.append("committed")
            except DBAPIError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=frozen_worker)
        worker.start()
        assert locked.wait(10)
        t0 = time.monotonic()
        reaped = reap_stale_runs(db, lease_s=60, requeue=True)  # blocks on the row lock …
        waited = time.monotonic() - t0
        worker.join()
        assert reaped == [(run_id, "queued")]  # … until the server ended the frozen session
        assert isinstance(outcome[0], DBAPIError), outcome  # the stale write did not land
        assert 0.5 < waited < 2.9, waited  # released by the limit, not by the worker waking
        with db.read() as s:
            assert s.get(Run, run_id).owner is None  # the frozen heartbeat never landed
    finally:
        db.dispose()


def test_metric_rows_reach_postgresql_as_whole_statements(pg_url):
    """A trainer stopped inside a write must leave its session idle, so that the stall limit
    above ends it: metric rows go as whole INSERT statements, never as an executemany (psycopg
    pipelines those, and between a pipeline's messages the session stays "active" with the
    run's row locked: the reaper then waited until the trainer woke up)."""
    db = Database(pg_url)
    seen: list[tuple[str, bool]] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def _record(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        seen.append((statement.split()[0].upper(), executemany))

    try:
        run_id = make_run(db, status="running", owner="w", attempts=1)
        n = 2 * METRIC_ROWS_PER_INSERT + 3
        rows = [
            {"run_id": run_id, "step": k, "train_loss": 1.0 / k, "val_loss": None,
             "val_metric": None, "elapsed_s": 0.01 * k}
            for k in range(1, n + 1)
        ]  # fmt: skip
        with db.write() as s:
            insert_metrics(s, rows[:10])
        seen.clear()
        with db.write() as s:
            insert_metrics(s, rows)  # the first 10 again (a retried write): skipped
        assert [many for verb, many in seen if verb == "INSERT"] == [False, False, False]
        with db.read() as s:
            steps = s.scalars(
                select(RunMetric.step).where(RunMetric.run_id == run_id).order_by(RunMetric.step)
            ).all()
        assert steps == list(range(1, n + 1))
    finally:
        db.dispose()


def test_startup_repairs_runs_of_dead_local_processes(db, db_url, tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.worker.local import HOST
    from tests.app.api_helpers import make_settings

    orphan = make_run(db, status="running", owner=f"local@{HOST}:1:pid999999", attempts=1)
    with db.write() as s:
        s.execute(update(Run).where(Run.id == orphan).values(heartbeat_at=utcnow()))
    app = create_app(make_settings(db_url, tmp_path), mount_dashboard=False)
    with TestClient(app) as c:
        run = c.get(f"/api/runs/{orphan}").json()
    assert run["status"] == "failed" and "server stopped" in run["error"]


def test_concurrent_writers_never_see_database_locked(sqlite_url):
    """Trainer-like metric batches and API-like run inserts from 8 threads at once."""
    db = Database(sqlite_url, busy_timeout_ms=30_000)
    run_id = make_run(db, status="running", owner="w")
    errors: list[BaseException] = []

    def metrics_writer(k: int) -> None:
        try:
            for b in range(25):
                with db.write() as s:
                    s.execute(
                        RunMetric.__table__.insert(),
                        [
                            {"run_id": run_id, "step": k * 10_000 + b * 10 + n, "train_loss": 1.0}
                            for n in range(10)
                        ],
                    )
                    s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def api_writer() -> None:
        try:
            for _ in range(25):
                make_run(db)
                with db.read() as s:
                    s.scalars(select(RunMetric).where(RunMetric.run_id == run_id)).all()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=metrics_writer, args=(k,)) for k in range(6)]
    threads += [threading.Thread(target=api_writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.read() as s:
        assert len(s.scalars(select(RunMetric.id)).all()) == 6 * 25 * 10
    db.dispose()


def test_requeued_run_trains_again_and_keeps_the_first_attempts_metrics(db, demo_csv):
    from app.services.datasets import ingest_csv
    from app.services.runs import create_run

    with db.write() as s:
        ds = ingest_csv(s, demo_csv, "demo.csv", None, 10_000, 100)
        run, _ = create_run(
            s,
            {
                "dataset_id": ds.id,
                "target_columns": ["HV"],
                "feature_columns": ["Al", "Ni"],
                "hidden": [2],
                "steps": 3,
                "update_grid_every": 0,
            },
            10**6,
        )
        run_id = run.id
    with db.write() as s:  # attempt 1 claims, writes two steps, then its worker dies
        assert claim_run(s, run_id, "dead-worker")
        s.execute(
            RunMetric.__table__.insert(),
            [{"run_id": run_id, "step": k, "train_loss": 9.0} for k in (1, 2)],
        )
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600)))
    assert reap_stale_runs(db, lease_s=60, requeue=True) == [(run_id, "queued")]
    assert run_training(run_id, "second-worker", db=db) == "succeeded"
    with db.read() as s:
        steps = list(
            s.scalars(
                select(RunMetric.step).where(RunMetric.run_id == run_id).order_by(RunMetric.step)
            )
        )
        run = s.get(Run, run_id)
    assert steps == [1, 2, 3, 4, 5]
    assert run.attempts == 2 and run.owner == "second-worker"
    assert run.summary["restarted_after_step"] == 2 and run.has_model
