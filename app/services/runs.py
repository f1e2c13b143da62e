"""Runs: create (validated against the dataset, idempotent), list, get, cancel, delete, metrics."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.clock import utcnow
from app.db.models import (
    FINISHED_STATUSES,
    ModelArtifact,
    Run,
    RunMetric,
    RunStatus,
)
from app.db.session import rowcount
from app.services.datasets import get_dataset
from app.services.devices import check_device
from app.services.ensembles import check_ensemble_run
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.services.memory import check_run_memory
from app.services.model_registry import get_model_spec
from app.services.run_claims import delete_checkpoint
from app.services.run_data import resolve_columns

CONFIG_EXCLUDE = {"dataset_id", "name"}


def validate_config(
    session: Session, dataset_id: int, config: dict[str, Any], max_parameters: int
) -> dict[str, Any]:
    """Check a run config against its dataset; returns it with feature columns resolved."""
    ds = get_dataset(session, dataset_id)
    spec = get_model_spec(config.get("model", "kan"))
    task = config.get("task", "regression")
    if task not in spec.tasks:
        raise InvalidInputError(
            f"Model {spec.name!r} does not support task {task!r}; it supports {list(spec.tasks)}."
        )
    if spec.check_config is not None:  # the kind's own options (e.g. discovery's budget)
        config = spec.check_config(config)
    check_device(config.get("device"))
    features, targets = resolve_columns(ds.columns, config)
    for key in ("train_rows", "val_rows"):
        rows = config.get(key)
        if rows is not None and rows and max(rows) >= ds.n_rows:
            raise InvalidInputError(
                f"{key} has row index {max(rows)}, but dataset {ds.id} has {ds.n_rows} rows "
                f"(indices 0..{ds.n_rows - 1})."
            )
    if task == "classification":
        col = next(c for c in ds.columns if c["name"] == targets[0])
        n_out = int(col["n_unique"])
        if n_out > 1000:
            raise InvalidInputError(
                f"Target {targets[0]!r} has {n_out} distinct values; classification supports "
                "at most 1000 classes. Did you mean task 'regression'?"
            )
    else:
        n_out = len(targets)
    if spec.estimate_parameters is not None:
        n_params = spec.estimate_parameters(config, len(features), n_out)
        if n_params > max_parameters:
            raise InvalidInputError(
                f"This model would have about {n_params:,} parameters, more than the limit of "
                f"{max_parameters:,}. Use fewer or narrower hidden layers or a smaller grid."
            )
    # peak memory against KANSCOPE_MAX_RUN_MEMORY_MB (kan / mlp): 422 naming what to lower
    check_run_memory(config, len(features), n_out, ds.n_rows)
    if spec.name == "kan":  # an ensemble: its group column, its members side by side
        width = [len(features), *[int(h) for h in config.get("hidden", [])], n_out]
        check_ensemble_run(ds.columns, config | {"target_columns": targets}, width, ds.n_rows,
                           check_run_memory)  # fmt: skip
    return config | {"feature_columns": features, "target_columns": targets}


def create_run(
    session: Session,
    payload: dict[str, Any],
    max_parameters: int,
    idempotency_key: str | None = None,
    parent_run_id: int | None = None,
    init_weights: bytes | None = None,
    sent_fields: set[str] | None = None,
) -> tuple[Run, bool]:
    """Insert a queued run (caller commits, then submits). Returns (run, created).

    With an ``idempotency_key`` the same key returns the run created first (if the config is the
    same; a different config under the same key is a 409). ``sent_fields``: the keys the client
    itself sent, the only ones compared, so that the server's defaults (which may change with
    an upgrade) never make a retry differ (None: every key of ``payload`` is compared).
    """
    config = {k: v for k, v in payload.items() if k not in CONFIG_EXCLUDE}
    config.setdefault("model", "kan")
    config.setdefault("task", "regression")
    dataset_id = int(payload["dataset_id"])
    if idempotency_key:
        existing = _by_key(session, idempotency_key)
        if existing is not None:
            return _same_or_conflict(existing, dataset_id, config, sent_fields), False
    config = validate_config(session, dataset_id, config, max_parameters)
    run = Run(
        name=payload.get("name"),
        dataset_id=dataset_id,
        parent_run_id=parent_run_id,
        model=config["model"],
        task=config.get("task", "regression"),
        config=config,
        status=RunStatus.QUEUED.value,
        idempotency_key=idempotency_key,
        summary={},
    )
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        if not idempotency_key:
            raise
        existing = _by_key(session, idempotency_key)
        if existing is None:
            raise
        return _same_or_conflict(existing, dataset_id, config, sent_fields), False
    if init_weights is not None:
        session.add(ModelArtifact(run_id=run.id, init_weights=init_weights, meta={}))
        session.flush()
    return run, True


def _by_key(session: Session, key: str) -> Run | None:
    return session.scalars(select(Run).where(Run.idempotency_key == key)).one_or_none()


def _same_or_conflict(
    existing: Run, dataset_id: int, config: dict[str, Any], sent_fields: set[str] | None = None
) -> Run:
    stored = {k: v for k, v in existing.config.items() if k != "feature_columns"}
    given = {
        k: v
        for k, v in config.items()
        if k != "feature_columns" and (sent_fields is None or k in sent_fields)
    }
    same_features = config.get("feature_columns") in (None, existing.config.get("feature_columns"))
    if existing.dataset_id != dataset_id or not same_features or _differs(stored, given):
        raise ConflictError(
            f"Idempotency-Key was already used for run {existing.id} with a different "
            "configuration. Use a new key for a new run."
        )
    return existing


def _differs(stored: dict[str, Any], given: dict[str, Any]) -> bool:
    keys = set(stored) | set(given)
    return any(stored.get(k) != given.get(k) for k in keys if k in given)


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"Run {run_id} does not exist.")
    return run


def list_runs(
    session: Session,
    dataset_id: int | None = None,
    status: str | None = None,
    limit: int = 500,
    parent_run_id: int | None = None,
    model: str | None = None,
) -> list[Run]:
    stmt = select(Run).order_by(Run.id.desc()).limit(limit)
    if dataset_id is not None:
        stmt = stmt.where(Run.dataset_id == dataset_id)
    if parent_run_id is not None:
        stmt = stmt.where(Run.parent_run_id == parent_run_id)
    if model is not None:
        stmt = stmt.where(Run.model == model)
    if status is not None:
        stmt = stmt.where(Run.status == status)
    return list(session.scalars(stmt))


def edited_runs(session: Session, run_ids: list[int]) -> set[int]:
    """The runs among ``run_ids`` whose model was changed after training (symbolic fixes,
    pruning: ``current_weights`` is set). Reads no weight bytes."""
    if not run_ids:
        return set()
    stmt = select(ModelArtifact.run_id).where(
        ModelArtifact.run_id.in_(run_ids), ModelArtifact.current_weights.is_not(None)
    )
    return set(session.scalars(stmt))


def queue_position(session: Session, run: Run) -> int | None:
    """A queued run's place in the queue: 1 + the queued runs created before it (the executors
    take runs in submission order); None unless queued."""
    if run.status != RunStatus.QUEUED.value:
        return None
    ahead = session.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.status == RunStatus.QUEUED.value, Run.id < run.id)
    )
    return int(ahead or 0) + 1


def cancel_run(session: Session, run_id: int) -> Run:
    """Queued: cancelled at once. Running: ``cancel_requested`` (the trainer stops within a
    step). Finished: 409."""
    run = get_run(session, run_id)
    if run.status in FINISHED_STATUSES:
        raise ConflictError(f"Run {run_id} already finished ({run.status}); nothing to cancel.")
    res = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)
        .values(
            status=RunStatus.CANCELLED.value,
            cancel_requested=True,
            finished_at=utcnow(),
            error="Cancelled before it started.",
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(res) == 1:  # a requeued run may have a checkpoint: no longer of use
        delete_checkpoint(session, run_id)
    else:
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.RUNNING.value)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    session.refresh(run)
    return run


def delete_run(session: Session, run_id: int) -> None:
    run = get_run(session, run_id)
    if run.status == RunStatus.RUNNING.value:
        raise ConflictError(
            f"Run {run_id} is running. Cancel it first (POST /api/runs/{run_id}/cancel)."
        )
    session.delete(run)
    session.flush()


def get_metrics(
    session: Session, run_id: int, after_step: int | None = None, limit: int = 5000
) -> tuple[str, str, list[Any]]:
    """(status, task, metric rows with step > after_step); plain rows, no ORM objects, since
    this is the endpoint every open dashboard polls. The status is read first: a finished one
    implies every row is stored (the trainer writes rows before its final status), while the
    rows may be newer than the status (PostgreSQL sees each statement's own snapshot)."""
    head = session.execute(select(Run.status, Run.task).where(Run.id == run_id)).one_or_none()
    if head is None:
        raise NotFoundError(f"Run {run_id} does not exist.")
    m = RunMetric
    stmt = (
        select(m.step, m.train_loss, m.val_loss, m.val_metric, m.elapsed_s)
        .where(m.run_id == run_id)
        .order_by(m.step)
    )
    if after_step is not None:
        stmt = stmt.where(m.step > after_step)
    return head.status, head.task, list(session.execute(stmt.limit(limit)))


#: how often a waiting metrics request looks at the database again
METRICS_WAIT_INTERVAL_S = 0.05


def wait_for_metrics(
    session: Session,
    run_id: int,
    after_step: int | None = None,
    limit: int = 5000,
    wait_s: float = 0.0,
) -> tuple[str, str, list[Any]]:
    """:func:`get_metrics`, but while the run has no rows after ``after_step`` and has not
    finished, look again every :data:`METRICS_WAIT_INTERVAL_S` for up to ``wait_s`` (a long
    poll: a page gets a run's first point as soon as the trainer stores it, without polling
    fast)."""
    deadline = time.monotonic() + wait_s
    while True:
        status, task, rows = get_metrics(session, run_id, after_step, limit)
        if rows or status in FINISHED_STATUSES or time.monotonic() >= deadline:
            return status, task, rows
        session.rollback()  # end the read transaction: the next look sees rows stored since
        time.sleep(METRICS_WAIT_INTERVAL_S)
