"""No metric row is lost when the database refuses writes, on SQLite and PostgreSQL.

The failures are injected into the real engine: an event listener makes COMMITs fail (the
error a full disk or a read-only database file gives) while a window is open, so the trainer's
own code meets them as it would in production. A run whose COMMITs fail mid-run keeps every
row and says what happened; a run whose rows cannot be stored at all ends ``failed`` and says
which rows are missing, never a clean "succeeded"; the claim (the first write) is retried.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import OperationalError

from app.config import get_settings
from app.db.models import ModelArtifact, Run, RunCheckpoint, RunMetric
from app.db.session import Database
from app.services.training import run_training
from kan_core.train import FitProgress

STEPS = 300
CONFIG = {
    "target_columns": ["HV"],
    "feature_columns": ["Al", "Ni"],
    "hidden": [2],
    "grid": 3,
    "steps": STEPS,
    "lr": 0.01,
    "log_every": 1,
    "seed": 0,
}
_WRITES = "kanscope_test_writes"


class FailingCommits:
    """While ``open`` is set, COMMITs on ``engine`` fail with the driver's "disk is full" error
    (of every transaction, or with ``metrics_only`` of those that inserted metric rows, as a
    nearly full disk refuses big writes and lets small ones through). Counts what failed."""

    def __init__(self, engine: Engine, metrics_only: bool = False) -> None:
        self.engine, self.metrics_only = engine, metrics_only
        self.open = threading.Event()
        self.failed: Counter[str] = Counter()
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def remove(self) -> None:
        event.remove(self.engine, "begin", self._begin)
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)

    def _begin(self, conn: Any) -> None:
        conn.info[_WRITES] = set()

    def _statement(self, conn: Any, _cur: Any, statement: str, *_args: Any) -> None:
        head = statement.lstrip()[:40].upper()
        if head.startswith("INSERT INTO RUN_METRICS"):
            conn.info.setdefault(_WRITES, set()).add("metrics")
        elif head.startswith(("INSERT INTO RUN_CHECKPOINTS", "UPDATE RUN_CHECKPOINTS")):
            conn.info.setdefault(_WRITES, set()).add("checkpoint")
        elif head.startswith("UPDATE RUNS"):
            conn.info.setdefault(_WRITES, set()).add("run")

    def _commit(self, conn: Any) -> None:
        writes = conn.info.pop(_WRITES, set())
        if not self.open.is_set() or (self.metrics_only and "metrics" not in writes):
            return
        for kind in writes or {"other"}:
            self.failed[kind] += 1
        raise OperationalError("COMMIT", None, OSError("database or disk is full (injected)"))


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KANSCOPE_CHECKPOINT_INTERVAL_S", "0")  # at every opportunity
    monkeypatch.setenv("KANSCOPE_CHECKPOINT_MAX_PER_RUN", "30")  # every 10 steps
    monkeypatch.setenv("KANSCOPE_HEARTBEAT_INTERVAL_S", "0.2")
    get_settings.cache_clear()
    database = Database(db_url)
    yield database
    database.dispose()
    get_settings.cache_clear()


@pytest.fixture
def run_id(db: Database, demo_csv: bytes) -> int:
    from app.services.datasets import ingest_csv
    from app.services.runs import create_run

    with db.write() as s:
        ds = ingest_csv(s, demo_csv, "demo.csv", None, 10_000, 100)
        run, _ = create_run(s, {"dataset_id": ds.id, **CONFIG}, 10**6)
        return run.id


def stored_steps(db: Database, run_id: int) -> list[int]:
    with db.read() as s:
        return list(
            s.scalars(
                select(RunMetric.step).where(RunMetric.run_id == run_id).order_by(RunMetric.step)
            )
        )


def run_row(db: Database, run_id: int) -> Run:
    with db.read() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run


def test_commits_failing_mid_run_lose_no_metric_row_and_the_run_says_so(
    db: Database, run_id: int
) -> None:
    failing = FailingCommits(db.engine)
    reported: list[int] = []
    checkpoint_after_window: list[int | None] = []

    def progress(p: FitProgress) -> None:
        reported.append(int(p.step))
        if p.step == 50:
            failing.open.set()
        if 50 <= p.step < 200:
            time.sleep(0.01)  # ~1.5 s of failing metric, checkpoint and heartbeat writes
        if p.step == 200:
            failing.open.clear()
        if p.step == 260:
            with db.read() as s:
                checkpoint_after_window.append(
                    s.scalar(select(RunCheckpoint.step).where(RunCheckpoint.run_id == run_id))
                )

    try:
        outcome = run_training(run_id, "worker-1", db=db, on_progress=progress)
    finally:
        failing.remove()

    # the failures happened where they hurt: metric batches and checkpoints were refused
    assert failing.failed["metrics"] >= 2, failing.failed
    assert failing.failed["checkpoint"] >= 2, failing.failed
    # and no row was lost: every reported step is stored, once
    assert reported == list(range(1, STEPS + 1))
    assert stored_steps(db, run_id) == reported
    # checkpoints went on after the window
    assert checkpoint_after_window[0] is not None and checkpoint_after_window[0] >= 200
    run = run_row(db, run_id)
    assert outcome == "succeeded" and run.status == "succeeded", run.error
    # the run says what happened
    failures = run.summary["write_failures"]
    assert failures["metrics"] >= 1 and failures["checkpoints"] >= 1, failures
    notes = " ".join(run.summary["notes"])
    assert "metric write failed" in notes and "disk is full" in notes, notes
    assert "checkpoint write failed" in notes, notes
    assert "No metric row was lost" in notes, notes


def test_rows_that_cannot_be_stored_fail_the_run_and_it_says_which(
    db: Database, run_id: int
) -> None:
    failing = FailingCommits(db.engine, metrics_only=True)  # small writes still go through

    def progress(p: FitProgress) -> None:
        if p.step == 120:
            failing.open.set()  # and it stays full

    try:
        outcome = run_training(run_id, "worker-1", db=db, on_progress=progress, result_retry_s=1)
    finally:
        failing.remove()

    assert failing.failed["metrics"] >= 2, failing.failed
    run = run_row(db, run_id)
    assert outcome == "failed" and run.status == "failed"
    stored = stored_steps(db, run_id)
    assert stored == list(range(1, len(stored) + 1)) and len(stored) < 120  # kept
    missing = STEPS - len(stored)
    assert run.summary["metrics_not_stored"] == missing
    assert f"{missing} metric rows (steps {len(stored) + 1}–{STEPS}) were not stored" in run.error
    assert "could not be stored" in run.error and "disk is full" in run.error, run.error
    assert run.error in run.summary["notes"]
    assert run.summary["write_failures"]["result"] >= 1
    assert not run.has_model
    with db.read() as s:  # nothing left behind to resume from
        assert s.scalar(select(RunCheckpoint.run_id).where(RunCheckpoint.run_id == run_id)) is None
        assert s.scalar(select(ModelArtifact.weights).where(ModelArtifact.run_id == run_id)) is None


def test_the_claim_is_retried_while_commits_fail(db: Database, run_id: int) -> None:
    failing = FailingCommits(db.engine)
    failing.open.set()
    threading.Timer(1.2, failing.open.clear).start()  # the database is back after 1.2 s
    try:
        outcome = run_training(run_id, "worker-1", db=db)
    finally:
        failing.remove()
    assert failing.failed["run"] >= 1, failing.failed  # the claim itself was refused
    assert outcome == "succeeded"
    assert stored_steps(db, run_id) == list(range(1, STEPS + 1))
    assert run_row(db, run_id).attempts == 1
