"""The run sink: what a trainer writes to its run while it trains. Metrics are buffered and
stored in batches, a heartbeat thread keeps the lease and reads ``cancel_requested``, checkpoints
are stored with the metrics up to their step — every write guarded by the run's ownership, and
no buffered row dropped when a write fails."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from app.db.clock import utcnow
from app.db.models import Run, RunCheckpoint, RunMetric
from app.db.session import Database, rowcount
from app.services.numbers import finite_or_none
from app.services.run_claims import owned_and_running
from kan_core.io import checkpoint_to_bytes
from kan_core.train import EnsembleCheckpoint, FitCheckpoint, FitProgress

log = logging.getLogger("kanscope.training")


class LostClaim(Exception):  # noqa: N818 - an outcome, not a fault
    """Raised inside a trainer's write when the run is no longer this worker's: the
    transaction rolls back, so a worker that lost its claim writes nothing."""


#: Metric rows per INSERT statement on PostgreSQL (6 parameters a row; the limit is 65535).
METRIC_ROWS_PER_INSERT = 1000


def insert_metrics(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert metric rows, skipping steps the run already has: a write whose COMMIT reported an
    error may still have been stored (a connection lost after the server committed), and its
    rows are written again by the next try.

    On PostgreSQL each batch is one multi-row INSERT, never an executemany: psycopg sends an
    executemany as a pipeline, one message per row with no sync in between, and a trainer
    stopped part way (SIGSTOP, swapped out) leaves its server session "active", waiting for the
    next message, where the idle limit of ``Database.write(stall_limit_s)`` does not apply —
    whatever the transaction had locked stays locked until the trainer wakes up (see
    :meth:`RunSink.check_last`). Between whole statements the session is idle and the limit
    holds."""
    if not rows:
        return
    table = RunMetric.__table__
    assert isinstance(table, Table)
    unique = ["run_id", "step"]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        for start in range(0, len(rows), METRIC_ROWS_PER_INSERT):
            batch = rows[start : start + METRIC_ROWS_PER_INSERT]
            stmt = postgresql.insert(table).values(batch)
            session.execute(stmt.on_conflict_do_nothing(index_elements=unique))
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        lite = sqlite.insert(table).on_conflict_do_nothing(index_elements=unique)
        session.execute(lite, rows)
    else:  # pragma: no cover - kanscope runs on SQLite and PostgreSQL
        session.execute(insert(table), rows)


def db_error(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


@dataclass
class _WriteFailures:
    """Failed writes of one kind during a run: how many, the first error, the steps."""

    count: int = 0
    first_error: str = ""
    first_step: int | None = None
    last_step: int | None = None


_WRITE_KINDS = {
    "metrics": "metric write",
    "checkpoints": "checkpoint write",
    "heartbeats": "heartbeat",
    "result": "write of the result",
}


class RunSink:
    """Buffers metrics and writes them in batches; a heartbeat thread keeps the lease and
    reads ``cancel_requested`` and ownership from the row. Writes checkpoints (at most one per
    ``checkpoint_interval_s``; None: never) together with the metrics up to their step.

    A buffered row leaves the buffer only once the transaction that stored it has committed: a
    write that fails (database away, disk full, a failed COMMIT) keeps its rows for the next
    one, and the final result carries whatever is still unwritten. Failed writes are counted;
    the run's summary says what failed and how often (:meth:`summary`).

    ``step_offset`` shifts metric steps (a restarted run numbers after the dead attempt);
    ``elapsed_offset`` shifts elapsed seconds (a resumed run counts on from its checkpoint);
    ``retry`` is what the run's summary says about an earlier, lost attempt;
    ``stall_limit_s`` bounds how long a write may hold the run's row (see ``Database.write``)."""

    def __init__(
        self,
        db: Database,
        run_id: int,
        owner: str,
        heartbeat_s: float,
        flush_s: float = 0.5,
        on_progress: Callable[[FitProgress], None] | None = None,
        step_offset: int = 0,
        elapsed_offset: float = 0.0,
        checkpoint_interval_s: float | None = None,
        retry: dict[str, Any] | None = None,
        stall_limit_s: float | None = None,
    ) -> None:
        self.on_progress = on_progress
        self.stall_limit_s = stall_limit_s
        self.step_offset, self.elapsed_offset = step_offset, elapsed_offset
        self.retry: dict[str, Any] = retry or {}
        self.db, self.run_id, self.owner = db, run_id, owner
        self.heartbeat_s, self.flush_s = heartbeat_s, flush_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.buffer: list[dict[str, Any]] = []
        self.failures: dict[str, _WriteFailures] = {}
        self.checkpoint_note: str | None = None
        self.last_step: int | None = None
        self.stored_any = False  # a metric row stored by this sink
        self.last_flush = self.last_checkpoint = time.monotonic()
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def record_failure(self, kind: str, exc: BaseException) -> None:
        """Count a failed write of ``kind`` (a key of ``_WRITE_KINDS``) for the run's summary."""
        f = self.failures.setdefault(kind, _WriteFailures())
        f.count += 1
        if f.count == 1:
            f.first_error, f.first_step = db_error(exc), self.last_step
        f.last_step = self.last_step

    def written(self, rows: list[dict[str, Any]]) -> None:
        """``rows`` are committed: they leave the buffer (rows added since stay)."""
        done = {id(r) for r in rows}
        self.buffer = [r for r in self.buffer if id(r) not in done]

    def summary(self) -> dict[str, Any]:
        """What the run's summary says about this worker's writes and an earlier lost attempt:
        ``write_failures`` (failed writes per kind, each retried) and sentences in ``notes``."""
        out = dict(self.retry)
        notes = list(out.get("notes", []))
        for kind, f in self.failures.items():
            steps = ""
            if f.first_step is not None:
                steps = (
                    f" at step {f.first_step}"
                    if f.last_step == f.first_step
                    else f" between steps {f.first_step} and {f.last_step}"
                )
            what = _WRITE_KINDS.get(kind, kind)
            times = "once" if f.count == 1 else f"{f.count} times"
            notes.append(f"A {what} failed {times}{steps} ({f.first_error}); it was retried.")
        if self.checkpoint_note:
            notes.append(self.checkpoint_note)
        if self.failures:
            out["write_failures"] = {k: f.count for k, f in self.failures.items()}
        if notes:
            out["notes"] = notes
        return out

    def _check(self, s: Session) -> None:
        res = s.execute(
            update(Run)
            .where(*owned_and_running(self.run_id, self.owner))
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if rowcount(res) != 1:
            self.lost.set()
            return
        if s.scalar(select(Run.cancel_requested).where(Run.id == self.run_id)):
            self.cancel.set()

    def check_last(self, s: Session) -> None:
        """The last statement of a write that stores data: the ownership check (with the
        heartbeat), raising :class:`LostClaim` — the write rolls back — when the run is no
        longer this worker's. Last, because its UPDATE locks the run's row until COMMIT: a
        trainer frozen part way through sending a statement (SIGSTOP, swapped out) leaves its
        server session waiting for the rest of that message, where PostgreSQL's idle limit
        (``Database.write(stall_limit_s)``) does not apply. Data sent first means such a
        session holds no lock the reaper or the next worker waits on; after this small UPDATE
        the session is idle until COMMIT, and the limit ends it if the trainer stalls there."""
        self._check(s)
        if self.lost.is_set():
            raise LostClaim

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self._lock, self.db.write(self.stall_limit_s) as s:
                    self._check(s)
            except (OperationalError, DBAPIError) as exc:  # database away: keep training
                self.record_failure("heartbeats", exc)
                log.warning("run %s: heartbeat failed (%s); will retry", self.run_id, db_error(exc))

    def add(self, p: FitProgress) -> bool:
        if self.on_progress is not None:
            self.on_progress(p)
        self.last_step = int(p.step) + self.step_offset
        self.buffer.append(
            {
                "run_id": self.run_id,
                "step": self.last_step,
                "train_loss": finite_or_none(p.train_loss),
                "val_loss": finite_or_none(p.val_loss),
                "val_metric": finite_or_none(p.val_metric),
                "elapsed_s": finite_or_none(p.elapsed_s + self.elapsed_offset),
            }
        )
        # the first row at once (a live curve from the first step: issue #22), then batches
        first = len(self.buffer) == 1 and not self.stored_any
        if first or time.monotonic() - self.last_flush >= self.flush_s or len(self.buffer) >= 500:
            self.flush()
        return not (self.cancel.is_set() or self.lost.is_set())

    def flush(self) -> None:
        """Store the buffered rows (ownership checked in the same transaction). They leave the
        buffer only after the COMMIT succeeded; a failed write keeps them for the next one."""
        if not self.buffer:
            return
        rows = list(self.buffer)
        try:
            with self._lock, self.db.write(self.stall_limit_s) as s:
                insert_metrics(s, rows)
                self.check_last(s)
        except LostClaim:
            self.buffer = []  # the run is not this worker's any more
            return
        except (OperationalError, DBAPIError) as exc:  # nothing stored: keep the rows
            self.record_failure("metrics", exc)
            log.warning("run %s: metrics write failed (%s); will retry", self.run_id, db_error(exc))
        else:
            self.written(rows)
            self.stored_any = True
        finally:
            self.last_flush = time.monotonic()

    @property
    def checkpoints(self) -> bool:
        return self.checkpoint_interval_s is not None

    def checkpoint(self, ckpt: FitCheckpoint | EnsembleCheckpoint) -> None:
        """``fit``'s ``on_checkpoint``: store it (replacing the previous one) with the buffered
        metrics, in one transaction and only while this worker owns the run. Too soon after the
        previous one, or the write failing: skipped, the metrics stay buffered and the next
        opportunity tries again (the run's summary counts the failures)."""
        if self.checkpoint_interval_s is None or self.lost.is_set():
            return
        if time.monotonic() - self.last_checkpoint < self.checkpoint_interval_s:
            return
        try:  # outside the transaction: it may take a moment
            blob = checkpoint_to_bytes(ckpt)
        except Exception as exc:  # a checkpoint that cannot be stored must not cost the run
            log.exception("run %s: checkpoint not storable; no more checkpoints", self.run_id)
            self.checkpoint_interval_s = None
            self.checkpoint_note = (
                f"No checkpoints after step {int(ckpt.step)}: the checkpoint could not be "
                f"serialised ({type(exc).__name__}: {exc})."
            )
            return
        step = int(ckpt.step) + self.step_offset
        rows = [r for r in self.buffer if r["step"] <= step]  # all of them: fit reports first
        try:
            with self._lock, self.db.write(self.stall_limit_s) as s:
                # the blob first, before this transaction has locked anything (check_last)
                values = {"step": int(ckpt.step), "data": blob, "created_at": utcnow()}
                res = s.execute(
                    update(RunCheckpoint)
                    .where(RunCheckpoint.run_id == self.run_id)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if rowcount(res) == 0:
                    s.execute(insert(RunCheckpoint).values(run_id=self.run_id, **values))
                insert_metrics(s, rows)
                self.check_last(s)
        except LostClaim:
            self.buffer = []
            return
        except (OperationalError, DBAPIError) as exc:  # keep the metrics; try again later
            self.record_failure("checkpoints", exc)
            log.warning(
                "run %s: checkpoint write failed (%s); will retry", self.run_id, db_error(exc)
            )
            return
        self.written(rows)
        self.last_checkpoint = self.last_flush = time.monotonic()
