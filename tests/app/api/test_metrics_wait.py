"""``GET /runs/{id}/metrics?wait_s=``: the long poll the Train page uses for a run's first
point (real database, SQLite and PostgreSQL; the trainer is a second session writing rows)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import update

from app.db.models import Run, RunMetric
from app.db.session import Database
from app.services import datasets, runs

FEATURES = ["Al", "Co"]


def queued_run(db: Database, demo_csv: bytes) -> int:
    with db.write() as s:
        ds = datasets.ingest_csv(s, demo_csv, "demo.csv", None, 100_000, 1000)
        body = {"dataset_id": ds.id, "target_columns": ["HV"], "feature_columns": FEATURES}
        run, _ = runs.create_run(s, body, 10**7)
        return run.id


def test_waits_for_the_first_row_then_answers_at_once(db_url: str, demo_csv: bytes) -> None:
    db = Database(db_url)
    run_id = queued_run(db, demo_csv)
    with db.read() as s:  # nothing comes: it waits the whole time, then answers empty
        started = time.monotonic()
        status, _, rows = runs.wait_for_metrics(s, run_id, wait_s=0.3)
        assert (status, rows) == ("queued", []) and time.monotonic() - started >= 0.3

    def trainer_writes_a_row() -> None:
        time.sleep(0.4)
        with db.write() as s:
            s.execute(update(Run).where(Run.id == run_id).values(status="running"))
            s.add(RunMetric(run_id=run_id, step=1, train_loss=0.5, elapsed_s=0.1))

    writer = threading.Thread(target=trainer_writes_a_row)
    writer.start()
    with db.read() as s:  # the row stored by another session is seen while waiting
        started = time.monotonic()
        status, _, rows = runs.wait_for_metrics(s, run_id, after_step=None, wait_s=8.0)
        waited = time.monotonic() - started
    writer.join()
    # the status is read before the rows (a finished status then implies every row is there), so
    # on PostgreSQL (a snapshot per statement) the writer's commit can fall between the two
    assert status in ("queued", "running") and [r.step for r in rows] == [1], status
    # answered when the row came, not at the 8 s timeout (a loaded machine delays the writer)
    assert 0.3 < waited < 7.0, waited

    with db.write() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status="cancelled"))
    with db.read() as s:  # a finished run has no more points to wait for
        started = time.monotonic()
        status, _, rows = runs.wait_for_metrics(s, run_id, after_step=1, wait_s=8.0)
        assert (status, rows) == ("cancelled", []) and time.monotonic() - started < 7.0
    db.dispose()
