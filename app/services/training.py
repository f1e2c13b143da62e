"""Training orchestration: :func:`run_training`, the one function both executors call (local
process per run, Celery task). It claims the run, hands it to its model kind's trainer through a
:class:`~app.services.run_sink.RunSink`, and stores the outcome.

Executor contract (see ARCHITECTURE.md): the run row is ``queued`` in the database; the trainer
claims it with a conditional update (``queued → running`` only if still queued), writes metrics
in batches and a heartbeat from the database clock, checks ``cancel_requested`` and that it still
owns the run, then stores the weights and the final status.

KAN / MLP runs also write a checkpoint now and then (``run_checkpoints``, owner-checked like the
metrics): a run requeued after its worker died resumes from it instead of starting over.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, undefer

from app.config import get_settings
from app.db.clock import utcnow
from app.db.models import Dataset, ModelArtifact, Run, RunCheckpoint, RunMetric, RunStatus
from app.db.session import Database, get_database, rowcount
from app.services.datasets import frame_from_bytes
from app.services.errors import InvalidInputError
from app.services.leaderboard import train_cross_validated
from app.services.memory import out_of_memory_message
from app.services.model_contract import PreparedData, TrainingJob, TrainOutcome
from app.services.model_registry import get_model_spec
from app.services.numbers import finite_or_none
from app.services.run_claims import claim_run, delete_checkpoint, owned_and_running
from app.services.run_data import prepare_data
from app.services.run_sink import LostClaim, RunSink, db_error, insert_metrics
from kan_core.errors import KanCoreError
from kan_core.io import checkpoint_from_bytes
from kan_core.train import EnsembleCheckpoint, FitCheckpoint, FitProgress

log = logging.getLogger("kanscope.training")


def _resolve_device(requested: str | None) -> str:
    """The run's device, or the worker's configured device (KANSCOPE_DEVICE) when unset."""
    if not requested:
        requested = get_settings().device or "cpu"
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(
            "The run asks for device 'cuda' but this worker has no CUDA GPU. Use device 'cpu' or "
            "'auto', or run it on a GPU worker (KANSCOPE_EXECUTOR=celery)."
        )
    return requested


def _retry(
    fn: Callable[[], Any],
    what: str,
    total_s: float = 60.0,
    on_error: Callable[[BaseException], None] | None = None,
) -> Any:
    """Retry a database write while the database is away (bounded), so a result isn't lost.
    ``on_error`` sees each failed try (the run's summary counts them)."""
    deadline, delay = time.monotonic() + total_s, 0.5
    while True:
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            if on_error is not None:
                on_error(exc)
            if time.monotonic() > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, db_error(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


#: how long the trainer keeps trying to store its final result (and then, that failing, a
#: short ``failed`` saying what could not be stored) before it gives up
RESULT_RETRY_S = 60.0


def run_training(
    run_id: int,
    owner: str,
    db: Database | None = None,
    on_progress: Callable[[FitProgress], None] | None = None,
    result_retry_s: float = RESULT_RETRY_S,
) -> str:
    """Claim and train run ``run_id``. Returns the outcome: a final status, or ``"skipped"``
    when another worker has it / it is no longer queued (a duplicate delivery), or ``"lost"``
    when this worker lost its claim while training. A requeued run resumes from its checkpoint
    when it has one. ``on_progress`` (e.g. a progress bar) sees every progress record.

    Every write is retried while the database is away (the claim and the first writes too);
    the final result for up to ``result_retry_s``. A result that cannot be stored in that
    time ends the run ``failed`` with an error that says what was not stored."""
    settings = get_settings()
    db = db or get_database()
    # every write of this worker to the run holds its row no longer than the lease: one frozen
    # mid-transaction must not keep the reaper (and the next worker) waiting on the lock
    stall_limit_s = settings.lease_s
    claimed = _retry(
        lambda: _claim(db, run_id, owner, settings.device, stall_limit_s), "claiming the run"
    )
    if claimed is None:
        return "skipped"
    run_config, retry = claimed
    log.info("run %s claimed by %s%s", run_id, owner, f" ({retry.note})" if retry.note else "")
    checkpoint_every = _checkpoint_every(settings, run_config)
    sink = RunSink(
        db,
        run_id,
        owner,
        settings.heartbeat_interval_s,
        on_progress=on_progress,
        step_offset=retry.step_offset,
        elapsed_offset=retry.elapsed_offset,
        # a restarted run's metric steps are offset, a checkpoint's are not: none for it
        checkpoint_interval_s=(
            settings.checkpoint_interval_s
            if checkpoint_every is not None and not retry.step_offset
            else None
        ),
        retry=retry.summary,
        stall_limit_s=stall_limit_s,
    )
    sink.start()  # heartbeats go on until the final result is stored: the worker is alive
    try:
        try:
            outcome, data = _train_claimed(db, run_id, sink, retry.checkpoint, checkpoint_every)
        except (KanCoreError, InvalidInputError) as exc:
            return _store_final(db, sink, RunStatus.FAILED, result_retry_s, error=str(exc))
        except Exception as exc:  # a bug or resource error: the run must not stay "running"
            log.exception("run %s crashed", run_id)
            msg = out_of_memory_message(exc) or f"Training crashed: {type(exc).__name__}: {exc}"
            return _store_final(db, sink, RunStatus.FAILED, result_retry_s, error=msg)
        if sink.lost.is_set():
            log.warning("run %s: lost ownership; result discarded", run_id)
            return "lost"
        status = (
            RunStatus.CANCELLED if outcome.stopped_reason == "cancelled" else RunStatus.SUCCEEDED
        )
        return _store_final(db, sink, status, result_retry_s, outcome=outcome, data=data)
    finally:
        sink.stop()


def _claim(
    db: Database, run_id: int, owner: str, default_device: str | None, stall_limit_s: float
) -> tuple[dict[str, Any], _Retry] | None:
    """One try of the claim (retried by the caller): the run's config and how it picks up,
    or None when it is not this worker's to train."""
    with db.write(stall_limit_s) as s:
        run = s.get(Run, run_id)
        if run is None:
            return None
        if run.status == RunStatus.RUNNING.value and run.owner == owner:
            # an earlier try whose COMMIT reported an error had in fact been stored
            retry = _prepare_retry(s, run_id, run.attempts) if run.attempts > 1 else _Retry()
            return dict(run.config), retry
        if run.status != RunStatus.QUEUED.value:
            return None
        run_config = dict(run.config)
        if not claim_run(s, run_id, owner, device=run_config.get("device", default_device)):
            return None
        retry = _Retry()
        if run.attempts >= 1:  # requeued after its worker was lost
            retry = _prepare_retry(s, run_id, attempt=run.attempts + 1)
        return run_config, retry


def _store_final(
    db: Database,
    sink: RunSink,
    status: RunStatus,
    retry_s: float,
    error: str | None = None,
    outcome: TrainOutcome | None = None,
    data: PreparedData | None = None,
) -> str:
    """Store the final status with every buffered metric row, retried for ``retry_s``. If that
    keeps failing, end the run ``failed`` in a small write that says what was not stored."""
    run_id, owner = sink.run_id, sink.owner
    try:
        stored = _retry(
            lambda: _finish(db, run_id, owner, sink, status, error, outcome, data),
            "storing the result",
            retry_s,
            on_error=lambda exc: sink.record_failure("result", exc),
        )
    except (OperationalError, DBAPIError) as exc:
        log.error("run %s: result not stored for %g s (%s)", run_id, retry_s, db_error(exc))
        return _fail_unstored(db, sink, status, retry_s, exc, error, outcome)
    return status.value if stored else "lost"


def _fail_unstored(
    db: Database,
    sink: RunSink,
    status: RunStatus,
    retry_s: float,
    exc: BaseException,
    error: str | None,
    outcome: TrainOutcome | None,
) -> str:
    """The result could not be stored: the run becomes ``failed`` with an error that says so
    and which metric rows are missing (the rows stored earlier stay). If even that cannot be
    written the run stays ``running`` and the reaper fails it once the lease has passed."""
    rows = sink.buffer
    ended = (
        f"Training ended ({outcome.stopped_reason})"
        if outcome is not None
        else f"Training ended with status {status.value}"
    )
    message = f"{ended} but its result could not be stored for {retry_s:g} s ({db_error(exc)})"
    if rows:
        steps = [int(r["step"]) for r in rows]
        message += f"; {len(rows)} metric rows (steps {min(steps)}–{max(steps)}) were not stored"
    message += "."
    if error:
        message += f" The training error was: {error}"
    message += " Start the run again."
    summary = sink.summary()
    summary["notes"] = [*summary.get("notes", []), message]
    summary["metrics_not_stored"] = len(rows)
    if outcome is not None:
        summary["stopped_reason"] = outcome.stopped_reason

    def write() -> bool:
        with db.write(sink.stall_limit_s) as s:
            res = s.execute(
                update(Run)
                .where(*owned_and_running(sink.run_id, sink.owner))
                .values(
                    status=RunStatus.FAILED.value,
                    finished_at=utcnow(),
                    heartbeat_at=utcnow(),
                    error=message,
                    summary=summary,
                    has_model=False,
                )
                .execution_options(synchronize_session=False)
            )
            if rowcount(res) == 1:
                delete_checkpoint(s, sink.run_id)
            return rowcount(res) == 1

    stored = _retry(write, "storing the failure to store the result", retry_s)
    return RunStatus.FAILED.value if stored else "lost"


@dataclass
class _Retry:
    """How a requeued run picks up: from ``checkpoint``, or from step 1 with metric steps
    after ``step_offset``; ``summary`` is what the run's summary says about it."""

    checkpoint: FitCheckpoint | EnsembleCheckpoint | None = None
    step_offset: int = 0
    elapsed_offset: float = 0.0
    note: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _prepare_retry(s: Session, run_id: int, attempt: int) -> _Retry:
    """In the claiming transaction of a requeued run: load its checkpoint and delete the metric
    rows after it (the lost tail of the dead attempt), or, without one, number the restarted
    attempt's metrics after the dead attempt's. Records what happened in the run's summary."""
    ckpt: FitCheckpoint | EnsembleCheckpoint | None = None
    blob = s.scalar(select(RunCheckpoint.data).where(RunCheckpoint.run_id == run_id))
    if blob is not None:
        try:
            ckpt = checkpoint_from_bytes(blob)
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not cost the run
            log.warning("run %s: checkpoint unreadable (%s); training restarts", run_id, exc)
            delete_checkpoint(s, run_id)
    if ckpt is not None:
        step = int(ckpt.step)
        s.execute(
            delete(RunMetric)
            .where(RunMetric.run_id == run_id, RunMetric.step > step)
            .execution_options(synchronize_session=False)
        )
        elapsed = s.scalar(
            select(RunMetric.elapsed_s)
            .where(RunMetric.run_id == run_id, RunMetric.step <= step)
            .order_by(RunMetric.step.desc())
            .limit(1)
        )
        note = f"Resumed from step {step} after the worker was lost (attempt {attempt})."
        retry = _Retry(
            ckpt, 0, float(elapsed or 0.0), note, {"resumed_from_step": step, "notes": [note]}
        )
    else:
        # no checkpoint (never written, or a baseline / cross-validated run): training restarts
        # and its metrics continue after the dead attempt's last step, so history is kept and
        # steps stay unique
        offset = int(
            s.scalar(select(func.max(RunMetric.step)).where(RunMetric.run_id == run_id)) or 0
        )
        note = (
            f"Restarted from step 1 after the worker was lost (attempt {attempt}): no "
            "checkpoint had been written"
            + (f"; its metric steps continue after step {offset}." if offset else ".")
        )
        retry = _Retry(None, offset, 0.0, note, {"restarted_after_step": offset, "notes": [note]})
    s.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(summary=retry.summary)
        .execution_options(synchronize_session=False)
    )
    return retry


def _checkpoint_every(settings: Any, config: dict[str, Any]) -> int | None:
    """Steps between checkpoint opportunities: at most ``checkpoint_max_per_run`` per run."""
    if settings.checkpoint_max_per_run <= 0:
        return None
    try:
        steps = max(1, int(config.get("steps", 200)))
    except (TypeError, ValueError):
        return None
    return max(1, math.ceil(steps / settings.checkpoint_max_per_run))


def _train_claimed(
    db: Database,
    run_id: int,
    sink: RunSink,
    resume: FitCheckpoint | EnsembleCheckpoint | None = None,
    checkpoint_every: int | None = None,
) -> tuple[TrainOutcome, PreparedData]:

    def read_inputs() -> tuple[dict[str, Any], list[Any], bytes, bytes | None]:
        with db.read() as s:
            run = s.get(Run, run_id)
            assert run is not None
            config = dict(run.config) | {"model": run.model, "task": run.task}
            ds = s.scalars(
                select(Dataset)
                .where(Dataset.id == run.dataset_id)
                .options(undefer(Dataset.content))
            ).one()
            init = s.scalars(
                select(ModelArtifact.init_weights).where(ModelArtifact.run_id == run_id)
            ).one_or_none()
            return config, ds.columns, ds.content, init

    config, columns, content, init = _retry(read_inputs, "reading the run's data")
    spec = get_model_spec(config["model"])
    device = _resolve_device(config.get("device"))
    if device != config.get("device"):

        def record_device() -> None:
            with db.write(sink.stall_limit_s) as s:
                s.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.owner == sink.owner)
                    .values(device=device)
                    .execution_options(synchronize_session=False)
                )

        _retry(record_device, "recording the run's device")
    frame = frame_from_bytes(content)
    data = prepare_data(frame, columns, config)
    group_column = (config.get("model_options") or {}).get("group_column")
    job = TrainingJob(
        run_id,
        config,
        data,
        sink.add,
        device,
        init_weights=init,
        resume=resume,
        on_checkpoint=sink.checkpoint if sink.checkpoints else None,
        checkpoint_every=checkpoint_every,
        group_values=frame[group_column].to_numpy() if group_column in frame else None,
    )
    if config.get("cv"):  # grouped K-fold run of a leaderboard, any model kind
        return train_cross_validated(job), data
    return spec.train(job), data


def _finish(
    db: Database,
    run_id: int,
    owner: str,
    sink: RunSink,
    status: RunStatus,
    error: str | None = None,
    outcome: TrainOutcome | None = None,
    data: PreparedData | None = None,
) -> bool:
    """One try of storing the final status, the buffered metric rows (all of them: the rows
    leave the buffer only once this commits) and the model, in one owner-guarded transaction.
    False when the run is no longer this worker's (nothing is written then). The model first,
    the owner-guarded update of the run's row last (see ``RunSink.check_last``)."""
    rows = list(sink.buffer)
    try:
        with db.write(sink.stall_limit_s) as s:
            if outcome is not None and data is not None:
                _store_model(s, run_id, outcome, data)
            insert_metrics(s, rows)
            delete_checkpoint(s, run_id)  # a finished run has nothing to resume
            res = s.execute(
                update(Run)
                .where(*owned_and_running(run_id, owner))
                .values(
                    status=status.value,
                    finished_at=utcnow(),
                    heartbeat_at=utcnow(),
                    error=error,
                    summary=_final_summary(sink, outcome, data),
                    has_model=bool(outcome is not None and outcome.weights is not None),
                )
                .execution_options(synchronize_session=False)
            )
            if rowcount(res) != 1:
                raise LostClaim
    except LostClaim:  # rolled back: nothing written, not even the buffered metrics
        sink.buffer = []
        return False
    sink.written(rows)  # committed
    return True


def _store_model(s: Session, run_id: int, outcome: TrainOutcome, data: PreparedData) -> None:
    """The trained model, its metadata and validation predictions (flushed: sent now)."""
    preds = None
    if outcome.val_predictions is not None:
        preds = {
            "rows": data.val_rows.tolist(),
            "y_pred": np.asarray(outcome.val_predictions).tolist(),
        }
    art = s.get(ModelArtifact, run_id)
    if art is None:
        art = ModelArtifact(run_id=run_id)
        s.add(art)
    art.weights = outcome.weights
    art.ensemble = outcome.ensemble
    art.current_weights = None
    art.meta = data.metadata()
    art.predictions = _json_safe(preds)
    art.revision = (art.revision or 0) + 1
    s.flush()


def _final_summary(
    sink: RunSink, outcome: TrainOutcome | None, data: PreparedData | None
) -> dict[str, Any]:
    """The run's summary: what training reported, then what the sink saw (an earlier lost
    attempt, failed writes) with its notes after the trainer's own."""
    summary: dict[str, Any] = {}
    if outcome is not None and data is not None:
        summary = {
            "stopped_reason": outcome.stopped_reason,
            "train_loss": finite_or_none(outcome.train_loss),
            "val_loss": finite_or_none(outcome.val_loss),
            "val_metric": finite_or_none(outcome.val_metric),
            "metric_name": "r2" if data.task == "regression" else "accuracy",
            "n_parameters": outcome.n_parameters,
            "n_rows_used": int(len(data.train_rows) + len(data.val_rows)),
            "n_rows_train": int(len(data.train_rows)),
            "n_rows_val": int(len(data.val_rows)),
            "n_rows_dropped": data.n_rows_dropped,
            "inputs": data.feature_names,
            "outputs": data.target_names,
            "classes": data.classes,
            **outcome.extra,
        }
    written = sink.summary()
    notes = [*summary.get("notes", []), *written.get("notes", [])]
    summary |= written | ({"notes": notes} if notes else {})
    if sink.failures.keys() & {"metrics", "checkpoints", "result"}:
        summary["notes"].append(
            "No metric row was lost: rows whose write failed were kept and stored later."
        )
    return summary


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
