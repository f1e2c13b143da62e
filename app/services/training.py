"""Training: data preparation, the model registry and :func:`run_training`, the one function
both executors call (local process per run, Celery task).

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import torch
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, undefer

from app.db.clock import utcnow, utcnow_minus
from app.db.models import Dataset, ModelArtifact, Run, RunCheckpoint, RunMetric, RunStatus
from app.db.session import Database, get_database
from app.services.datasets import frame_from_bytes
from app.services.errors import InvalidInputError
from app.services.memory import out_of_memory_message
from app.services.numbers import finite_or_none
from kan_core.errors import KanCoreError
from kan_core.scaling import Standardizer
from kan_core.train import FitCheckpoint, FitProgress

log = logging.getLogger("kanscope.training")

# ── prepared data ───────────────────────────────────────────────────────────────────────────


@dataclass
class PreparedData:
    """Standardised inputs (and targets for regression), split into train / validation.

    ``x_*`` are float32 (n, n_features) in standardised units; ``y_*`` are float32
    (n, n_targets) standardised (regression) or int64 (n,) class indices (classification).
    ``*_rows`` are the dataset row indices. Scalers map back to the original units.
    """

    task: str
    feature_names: list[str]
    target_names: list[str]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    train_rows: np.ndarray
    val_rows: np.ndarray
    x_scaler: Standardizer
    y_scaler: Standardizer | None
    classes: list[str] | None
    n_rows_dropped: int

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes is not None else len(self.target_names)

    def metadata(self) -> dict[str, Any]:
        """What travels with the model file (JSON): names, scalers, class labels."""
        return {
            "task": self.task,
            "feature_names": self.feature_names,
            "target_names": self.target_names,
            "classes": self.classes,
            "x_scaler": self.x_scaler.to_dict(),
            "y_scaler": self.y_scaler.to_dict() if self.y_scaler is not None else None,
        }


def resolve_columns(
    columns: list[dict[str, Any]], config: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """(features, targets) after checking they exist and have usable types."""
    by_name = {c["name"]: c for c in columns}
    targets = list(config["target_columns"])
    missing = [t for t in targets if t not in by_name]
    if missing:
        raise InvalidInputError(
            f"Target column(s) {missing} are not in the dataset. Columns: {list(by_name)}"
        )
    if config.get("feature_columns") is None:
        features = [
            c["name"] for c in columns if c["kind"] == "numeric" and c["name"] not in targets
        ]
    else:
        features = list(config["feature_columns"])
        missing = [f for f in features if f not in by_name]
        if missing:
            raise InvalidInputError(
                f"Feature column(s) {missing} are not in the dataset. Columns: {list(by_name)}"
            )
        text = [f for f in features if by_name[f]["kind"] != "numeric"]
        if text:
            raise InvalidInputError(
                f"Feature column(s) {text} are not numeric; choose numeric columns "
                "(or featurise compositions first)."
            )
    if not features:
        raise InvalidInputError("No numeric feature columns: choose at least one feature.")
    if config.get("task", "regression") == "regression":
        text = [t for t in targets if by_name[t]["kind"] != "numeric"]
        if text:
            raise InvalidInputError(
                f"Target column(s) {text} are not numeric; use task 'classification' for labels."
            )
    return features, targets


def prepare_data(
    frame: pd.DataFrame, columns: list[dict[str, Any]], config: dict[str, Any]
) -> PreparedData:
    """Select columns, drop incomplete rows (counted), split, standardise."""
    features, targets = resolve_columns(columns, config)
    task = config.get("task", "regression")
    x_all = frame[features].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    complete = np.isfinite(x_all).all(axis=1)
    if task == "regression":
        y_all = frame[targets].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
        complete &= np.isfinite(y_all).all(axis=1)
    else:
        labels = frame[targets[0]]
        complete &= labels.notna().to_numpy()
    rows_all = np.arange(len(frame))
    n_dropped = int((~complete).sum())
    val_rows_cfg, train_rows_cfg = config.get("val_rows"), config.get("train_rows")
    if val_rows_cfg is not None:
        bad = [r for r in list(val_rows_cfg) + list(train_rows_cfg or []) if r >= len(frame)]
        if bad:
            raise InvalidInputError(
                f"Row indices {bad[:5]} are out of range: the dataset has {len(frame)} rows."
            )
        val_set = set(val_rows_cfg)
        val_rows = np.array([r for r in sorted(val_set) if complete[r]], dtype=np.int64)
        if train_rows_cfg is not None:
            train_rows = np.array(
                [r for r in sorted(set(train_rows_cfg)) if complete[r]], dtype=np.int64
            )
        else:
            train_rows = np.array(
                [r for r in rows_all if complete[r] and r not in val_set], dtype=np.int64
            )
    else:
        usable = rows_all[complete]
        n_val = int(round(len(usable) * float(config.get("val_fraction", 0.2))))
        if len(usable) - n_val < 1:
            n_val = 0
        perm = np.random.default_rng(int(config.get("seed", 0))).permutation(len(usable))
        val_rows = np.sort(usable[perm[:n_val]])
        train_rows = np.sort(usable[perm[n_val:]])
    if len(train_rows) < 2:
        raise InvalidInputError(
            f"Only {len(train_rows)} complete training row(s) remain after dropping "
            f"{n_dropped} row(s) with missing values; at least 2 are needed."
        )

    x_train_raw = torch.tensor(x_all[train_rows], dtype=torch.float32)
    x_scaler = Standardizer.fit(x_train_raw)
    x_train = x_scaler.transform(x_train_raw)
    x_val = (
        x_scaler.transform(torch.tensor(x_all[val_rows], dtype=torch.float32))
        if len(val_rows)
        else None
    )
    classes: list[str] | None = None
    y_scaler: Standardizer | None = None
    if task == "regression":
        y_train_raw = torch.tensor(y_all[train_rows], dtype=torch.float32)
        y_scaler = Standardizer.fit(y_train_raw)
        y_train = y_scaler.transform(y_train_raw)
        y_val = (
            y_scaler.transform(torch.tensor(y_all[val_rows], dtype=torch.float32))
            if len(val_rows)
            else None
        )
    else:
        labels = frame[targets[0]].astype(str)
        classes = sorted(labels[complete].unique().tolist())
        if len(classes) < 2:
            raise InvalidInputError(
                f"Classification needs at least 2 classes in {targets[0]!r}; found {classes}."
            )
        index = {c: n for n, c in enumerate(classes)}
        codes = labels.map(index).fillna(-1).astype("int64").to_numpy()
        y_train = torch.tensor(codes[train_rows], dtype=torch.long)
        y_val = torch.tensor(codes[val_rows], dtype=torch.long) if len(val_rows) else None
    return PreparedData(
        task=task,
        feature_names=features,
        target_names=targets,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        train_rows=train_rows,
        val_rows=val_rows,
        x_scaler=x_scaler,
        y_scaler=y_scaler,
        classes=classes,
        n_rows_dropped=n_dropped,
    )


# ── model registry ──────────────────────────────────────────────────────────────────────────

#: progress reporter handed to a trainer; returns False when training must stop
Reporter = Callable[[FitProgress], bool]


@dataclass
class TrainingJob:
    """What a trainer gets. ``resume``: the checkpoint to continue from (a requeued run);
    ``on_checkpoint``: where to hand checkpoints every ``checkpoint_every`` steps (None: don't).
    Trainers that cannot checkpoint (the scikit-learn baselines) ignore the three."""

    run_id: int
    config: dict[str, Any]
    data: PreparedData
    report: Reporter
    device: str
    init_weights: bytes | None = None
    resume: FitCheckpoint | None = None
    on_checkpoint: Callable[[FitCheckpoint], None] | None = None
    checkpoint_every: int | None = None


@dataclass
class TrainOutcome:
    """What a trainer returns. ``weights``: kan_core.io bytes (None for models kept as
    predictions only). ``val_predictions``: regression (n_val, n_out) in standardised units,
    classification (n_val,) class indices — stored so the predictions endpoint works for
    models without weights."""

    stopped_reason: str
    train_loss: float | None
    val_loss: float | None
    val_metric: float | None
    n_parameters: int
    weights: bytes | None = None
    val_predictions: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """One trainable model kind. ``estimate_parameters(config, n_in, n_out)`` guards memory."""

    name: str
    description: str
    tasks: tuple[str, ...]
    train: Callable[[TrainingJob], TrainOutcome]
    inspectable: bool = False
    estimate_parameters: Callable[[dict[str, Any], int, int], int] | None = None
    #: checks a run's config when the run is created (raises InvalidInputError: 422, nothing
    #: queued) and returns the config to store; None: nothing kind-specific to check
    check_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None


MODEL_REGISTRY: dict[str, ModelSpec] = {}
_extensions_loaded = False


def register_model(spec: ModelSpec) -> None:
    """Add a model kind (e.g. the scikit-learn baselines in app.services.baselines)."""
    MODEL_REGISTRY[spec.name] = spec


def _load_extensions() -> None:
    """Import the modules that register more model kinds, once per process: the baselines,
    formula discovery and ``KANSCOPE_MODEL_PLUGINS`` (so a spawned or remote trainer knows the
    same kinds)."""
    global _extensions_loaded
    if _extensions_loaded:
        return
    _extensions_loaded = True
    import importlib

    from app.config import get_settings

    plugins = [m.strip() for m in get_settings().model_plugins.split(",") if m.strip()]
    for module in ("app.services.baselines", "app.services.discovery", *plugins):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            log.warning("model plugin %s not loaded: %s", module, exc)


def available_models() -> dict[str, ModelSpec]:
    _load_extensions()
    return dict(MODEL_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    models = available_models()
    if name not in models:
        raise InvalidInputError(f"Unknown model {name!r}. Available models: {sorted(models)}")
    return models[name]


def model_width(config: dict[str, Any], n_in: int, n_out: int) -> list[int]:
    return [n_in, *[int(h) for h in config.get("hidden", [])], n_out]


def estimate_kan_parameters(config: dict[str, Any], n_in: int, n_out: int) -> int:
    width = model_width(config, n_in, n_out)
    edges = sum(a * b for a, b in zip(width[:-1], width[1:], strict=False))
    # spline coefficients (grid + k) + base weight + spline scale + symbolic affine (4) + masks
    per_edge = int(config.get("grid", 5)) + int(config.get("k", 3)) + 8
    return edges * per_edge + sum(width[1:])


def estimate_mlp_parameters(config: dict[str, Any], n_in: int, n_out: int) -> int:
    width = model_width(config, n_in, n_out)
    return sum(a * b + b for a, b in zip(width[:-1], width[1:], strict=False))


def fit_config_from(config: dict[str, Any]) -> Any:
    from kan_core.train import FitConfig

    return FitConfig(
        steps=int(config.get("steps", 200)),
        optimizer=config.get("optimizer", "adam"),
        lr=float(config.get("lr", 1e-2)),
        batch_size=config.get("batch_size"),
        task=config.get("task", "regression"),
        lamb=float(config.get("lamb", 0.0)),
        lamb_l1=float(config.get("lamb_l1", 1.0)),
        lamb_entropy=float(config.get("lamb_entropy", 2.0)),
        update_grid_every=int(config.get("update_grid_every", 0)),
        update_grid_until=config.get("update_grid_until"),
        grid_eps=float(config.get("grid_eps", 1.0)),
        early_stopping_patience=config.get("early_stopping_patience"),
        seed=int(config.get("seed", 0)),
        log_every=int(config.get("log_every", 1)),
    )


def build_torch_model(job: TrainingJob) -> torch.nn.Module:
    from kan_core.io import model_from_bytes
    from kan_core.model import KAN, MLP

    cfg, data = job.config, job.data
    if job.init_weights is not None:
        model, _ = model_from_bytes(job.init_weights, device=job.device)
        if list(model.width) != [len(data.feature_names), *model.width[1:-1], data.n_outputs]:
            raise InvalidInputError("The parent model's inputs/outputs do not match this data.")
        model.train()
        return model
    width = model_width(cfg, len(data.feature_names), data.n_outputs)
    if cfg.get("model", "kan") == "kan":
        return KAN(
            width,
            grid=int(cfg.get("grid", 5)),
            k=int(cfg.get("k", 3)),
            basis=cfg.get("basis", "bspline"),
            seed=int(cfg.get("seed", 0)),
            device=job.device,
        )
    return MLP(
        width,
        activation=cfg.get("activation", "silu"),
        seed=int(cfg.get("seed", 0)),
        device=job.device,
    )


def train_torch(job: TrainingJob) -> TrainOutcome:
    from kan_core.io import model_to_bytes
    from kan_core.train import TrainData, fit

    data = job.data
    # a resumed run builds its model as the first attempt did (a retrain from its parent's
    # model, so symbolic edges are set), then fit loads the checkpoint's state into it
    model = build_torch_model(job)
    cfg = fit_config_from(job.config)
    if job.checkpoint_every is not None:
        cfg.checkpoint_every = job.checkpoint_every
    result = fit(
        model,
        TrainData(data.x_train, data.y_train, data.x_val, data.y_val),
        cfg,
        callback=job.report,
        resume=job.resume,
        on_checkpoint=job.on_checkpoint,
    )
    model.eval()
    preds = None
    if data.x_val is not None:
        with torch.no_grad():
            out = model(data.x_val.to(next(model.parameters()).device)).cpu()
        preds = out.argmax(-1).numpy() if data.task == "classification" else out.numpy()
    meta = data.metadata() | {"run_id": job.run_id}
    return TrainOutcome(
        stopped_reason=result.stopped_reason,
        train_loss=result.train_loss,
        val_loss=result.val_loss,
        val_metric=result.val_metric,
        n_parameters=int(model.num_parameters()),
        weights=model_to_bytes(model.cpu(), meta),
        val_predictions=preds,
        # engine: "fused-cpu" (kan_core.fused), "torch" or "torch-compiled"
        extra={"best_step": result.best_step, "width": list(model.width), "engine": result.engine},
    )


def check_no_model_options(config: dict[str, Any]) -> dict[str, Any]:
    """``ModelSpec.check_config`` of the networks: their settings are the run's own fields, so
    ``model_options`` must be empty (an option given there would be ignored silently)."""
    options = config.get("model_options") or {}
    if options:
        raise InvalidInputError(
            f"Model {config.get('model', 'kan')!r} takes no model_options (got "
            f"{sorted(options)}); set its options as the run's own fields (hidden, grid, k, "
            "basis, activation, lr …)."
        )
    return config


register_model(
    ModelSpec(
        "kan",
        "Kolmogorov–Arnold Network (learnable edge functions)",
        ("regression", "classification"),
        train_torch,
        inspectable=True,
        estimate_parameters=estimate_kan_parameters,
        check_config=check_no_model_options,
    )
)
register_model(
    ModelSpec(
        "mlp",
        "Multi-layer perceptron baseline (same training loop)",
        ("regression", "classification"),
        train_torch,
        estimate_parameters=estimate_mlp_parameters,
        check_config=check_no_model_options,
    )
)


# ── claiming, heartbeat, reaping ────────────────────────────────────────────────────────────


def claim_run(session: Session, run_id: int, owner: str, device: str | None = None) -> bool:
    """``queued → running`` only if still queued and not cancelled; True if this owner won."""
    res = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)
        .values(
            status=RunStatus.RUNNING.value,
            owner=owner,
            started_at=utcnow(),
            heartbeat_at=utcnow(),
            attempts=Run.attempts + 1,
            device=device,
        )
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1


def reap_stale_runs(db: Database, lease_s: float, requeue: bool = False) -> list[tuple[int, str]]:
    """Runs ``running`` whose heartbeat is older than ``lease_s`` (database clock): failed
    with a reason, or requeued once when ``requeue`` and this was their first attempt.
    Returns (run id, new status) pairs."""
    reaped: list[tuple[int, str]] = []
    with db.write() as s:
        stale = s.execute(
            select(Run.id, Run.attempts, Run.owner, Run.heartbeat_at, utcnow()).where(
                Run.status == RunStatus.RUNNING.value,
                (Run.heartbeat_at.is_(None)) | (Run.heartbeat_at < utcnow_minus(lease_s)),
            )
        ).all()
        for run_id, attempts, owner, heartbeat_at, now in stale:
            guard = (
                Run.id == run_id,
                Run.status == RunStatus.RUNNING.value,
                (Run.heartbeat_at.is_(None)) | (Run.heartbeat_at < utcnow_minus(lease_s)),
            )
            if requeue and attempts <= 1:
                values: dict[str, Any] = {"status": RunStatus.QUEUED.value, "owner": None}
            else:
                values = {
                    "status": RunStatus.FAILED.value,
                    "finished_at": utcnow(),
                    "error": _stale_reason(s, run_id, owner, heartbeat_at, now, lease_s),
                }
            res = s.execute(
                update(Run)
                .where(*guard)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount:
                reaped.append((int(run_id), values["status"]))
                if values["status"] == RunStatus.FAILED.value:
                    drop_checkpoints(s, [int(run_id)])
    if reaped:
        log.warning("reaped stale runs %s", reaped)
    return reaped


def _stale_reason(
    s: Session,
    run_id: int,
    owner: str | None,
    heartbeat_at: datetime | None,
    now: datetime | None,
    lease_s: float,
) -> str:
    """What the reaper saw, in the failed run's error: how long no heartbeat came (database
    clock), from which worker, and the last metric step stored."""
    if heartbeat_at is None:
        seen = f"No heartbeat was ever recorded from worker {owner}"
    else:
        age = (now - heartbeat_at).total_seconds() if now is not None else None
        ago = f" {age:.0f} s before this check" if age is not None else ""
        seen = (
            f"No heartbeats from worker {owner} since {heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
            f"{ago} (database clock)"
        )
    n_rows, last_step = s.execute(
        select(func.count(RunMetric.id), func.max(RunMetric.step)).where(RunMetric.run_id == run_id)
    ).one()
    stored = (
        f"{n_rows} metric rows are stored, the last at step {last_step}"
        if n_rows
        else "no metric rows are stored"
    )
    return (
        f"{seen}; the lease is {lease_s:g} s. {stored[0].upper()}{stored[1:]}. The worker did "
        "not renew its lease: it may have died, hung, or been unable to write to the database. "
        "Start the run again."
    )


def fail_runs_of_owner_prefix(db: Database, prefix: str, reason: str) -> list[int]:
    """Start-up repair: runs left ``running`` by a previous process tree on this host."""
    with db.write() as s:
        ids = list(
            s.scalars(
                select(Run.id).where(
                    Run.status == RunStatus.RUNNING.value, Run.owner.startswith(prefix)
                )
            )
        )
        if ids:
            s.execute(
                update(Run)
                .where(Run.id.in_(ids), Run.status == RunStatus.RUNNING.value)
                .values(status=RunStatus.FAILED.value, finished_at=utcnow(), error=reason)
                .execution_options(synchronize_session=False)
            )
            drop_checkpoints(s, ids)
    return ids


def mark_failed_if_owned(db: Database, run_id: int, owner: str | None, reason: str) -> bool:
    """Set ``failed`` if the run is still running (under ``owner`` when given) or queued."""
    with db.write() as s:
        cond = [Run.id == run_id, Run.status.in_([RunStatus.RUNNING.value])]
        if owner is not None:
            cond.append(Run.owner == owner)
        res = s.execute(
            update(Run)
            .where(*cond)
            .values(status=RunStatus.FAILED.value, finished_at=utcnow(), error=reason)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:
            drop_checkpoints(s, [run_id])
        return res.rowcount == 1


def fail_if_still_queued(db: Database, run_id: int, reason: str) -> bool:
    """A training process that died before claiming its run: fail the run, don't strand it."""
    with db.write() as s:
        res = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)
            .values(status=RunStatus.FAILED.value, finished_at=utcnow(), error=reason)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:  # a requeued run may have a checkpoint
            drop_checkpoints(s, [run_id])
        return res.rowcount == 1


def delete_checkpoint(session: Session, run_id: int) -> None:
    """Delete the run's checkpoint (in the caller's transaction), whatever its status."""
    session.execute(
        delete(RunCheckpoint)
        .where(RunCheckpoint.run_id == run_id)
        .execution_options(synchronize_session=False)
    )


def drop_checkpoints(session: Session, run_ids: list[int]) -> None:
    """Delete the checkpoints of those of ``run_ids`` that have finished (in the caller's
    transaction): a checkpoint only serves to resume an unfinished run."""
    if not run_ids:
        return
    finished = select(Run.id).where(
        Run.id.in_(run_ids),
        Run.status.in_([s.value for s in RunStatus if s.finished]),
    )
    session.execute(
        delete(RunCheckpoint)
        .where(RunCheckpoint.run_id.in_(finished))
        .execution_options(synchronize_session=False)
    )


def insert_metrics(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert metric rows, skipping steps the run already has: a write whose COMMIT reported an
    error may still have been stored (a connection lost after the server committed), and its
    rows are written again by the next try."""
    if not rows:
        return
    table = RunMetric.__table__
    stmt: Any
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # pragma: no cover - kanscope runs on SQLite and PostgreSQL
        session.execute(insert(table), rows)
        return
    stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=["run_id", "step"])
    session.execute(stmt, rows)


def _db_error(exc: BaseException) -> str:
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


class _RunSink:
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
            f.first_error, f.first_step = _db_error(exc), self.last_step
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
            .where(
                Run.id == self.run_id,
                Run.owner == self.owner,
                Run.status == RunStatus.RUNNING.value,
            )
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            self.lost.set()
            return
        if s.scalar(select(Run.cancel_requested).where(Run.id == self.run_id)):
            self.cancel.set()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self._lock, self.db.write(self.stall_limit_s) as s:
                    self._check(s)
            except (OperationalError, DBAPIError) as exc:  # database away: keep training
                self.record_failure("heartbeats", exc)
                log.warning(
                    "run %s: heartbeat failed (%s); will retry", self.run_id, _db_error(exc)
                )

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
        if time.monotonic() - self.last_flush >= self.flush_s or len(self.buffer) >= 500:
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
                self._check(s)  # ownership first: a worker that lost its claim writes nothing
                if self.lost.is_set():
                    self.buffer = []  # the run is not this worker's any more
                    return
                insert_metrics(s, rows)
        except (OperationalError, DBAPIError) as exc:  # nothing stored: keep the rows
            self.record_failure("metrics", exc)
            log.warning(
                "run %s: metrics write failed (%s); will retry", self.run_id, _db_error(exc)
            )
        else:
            self.written(rows)
        finally:
            self.last_flush = time.monotonic()

    @property
    def checkpoints(self) -> bool:
        return self.checkpoint_interval_s is not None

    def checkpoint(self, ckpt: FitCheckpoint) -> None:
        """``fit``'s ``on_checkpoint``: store it (replacing the previous one) with the buffered
        metrics, in one transaction and only while this worker owns the run. Too soon after the
        previous one, or the write failing: skipped, the metrics stay buffered and the next
        opportunity tries again (the run's summary counts the failures)."""
        if self.checkpoint_interval_s is None or self.lost.is_set():
            return
        if time.monotonic() - self.last_checkpoint < self.checkpoint_interval_s:
            return
        from kan_core.io import checkpoint_to_bytes

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
                self._check(s)  # ownership first: a worker that lost its claim writes nothing
                if self.lost.is_set():
                    self.buffer = []
                    return
                insert_metrics(s, rows)
                values = {"step": int(ckpt.step), "data": blob, "created_at": utcnow()}
                res = s.execute(
                    update(RunCheckpoint)
                    .where(RunCheckpoint.run_id == self.run_id)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 0:
                    s.execute(insert(RunCheckpoint).values(run_id=self.run_id, **values))
        except (OperationalError, DBAPIError) as exc:  # keep the metrics; try again later
            self.record_failure("checkpoints", exc)
            log.warning(
                "run %s: checkpoint write failed (%s); will retry", self.run_id, _db_error(exc)
            )
            return
        self.written(rows)
        self.last_checkpoint = self.last_flush = time.monotonic()


def _resolve_device(requested: str | None) -> str:
    """The run's device, or the worker's configured device (KANSCOPE_DEVICE) when unset."""
    if not requested:
        from app.config import get_settings

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
            log.warning("%s failed (%s); retrying in %.1fs", what, _db_error(exc), delay)
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
    from app.config import get_settings

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
    sink = _RunSink(
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
    sink: _RunSink,
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
        log.error("run %s: result not stored for %g s (%s)", run_id, retry_s, _db_error(exc))
        return _fail_unstored(db, sink, status, retry_s, exc, error, outcome)
    return status.value if stored else "lost"


def _fail_unstored(
    db: Database,
    sink: _RunSink,
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
    message = f"{ended} but its result could not be stored for {retry_s:g} s ({_db_error(exc)})"
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
                .where(
                    Run.id == sink.run_id,
                    Run.owner == sink.owner,
                    Run.status == RunStatus.RUNNING.value,
                )
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
            if res.rowcount == 1:
                delete_checkpoint(s, sink.run_id)
            return res.rowcount == 1

    stored = _retry(write, "storing the failure to store the result", retry_s)
    return RunStatus.FAILED.value if stored else "lost"


@dataclass
class _Retry:
    """How a requeued run picks up: from ``checkpoint``, or from step 1 with metric steps
    after ``step_offset``; ``summary`` is what the run's summary says about it."""

    checkpoint: FitCheckpoint | None = None
    step_offset: int = 0
    elapsed_offset: float = 0.0
    note: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _prepare_retry(s: Session, run_id: int, attempt: int) -> _Retry:
    """In the claiming transaction of a requeued run: load its checkpoint and delete the metric
    rows after it (the lost tail of the dead attempt), or, without one, number the restarted
    attempt's metrics after the dead attempt's. Records what happened in the run's summary."""
    from kan_core.io import checkpoint_from_bytes

    ckpt: FitCheckpoint | None = None
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
    sink: _RunSink,
    resume: FitCheckpoint | None = None,
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
    data = prepare_data(frame_from_bytes(content), columns, config)
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
    )
    torch.manual_seed(int(config.get("seed", 0)))
    if config.get("cv"):  # grouped K-fold run of a leaderboard, any model kind
        from app.services.leaderboard import train_cross_validated

        return train_cross_validated(job), data
    return spec.train(job), data


def _finish(
    db: Database,
    run_id: int,
    owner: str,
    sink: _RunSink,
    status: RunStatus,
    error: str | None = None,
    outcome: TrainOutcome | None = None,
    data: PreparedData | None = None,
) -> bool:
    """One try of storing the final status, the buffered metric rows (all of them: the rows
    leave the buffer only once this commits) and the model, in one owner-guarded transaction.
    False when the run is no longer this worker's (nothing is written then)."""
    rows = list(sink.buffer)
    with db.write(sink.stall_limit_s) as s:
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
        # a lost earlier attempt (resumed from / restarted after which step), failed writes
        summary |= sink.summary()
        if sink.failures.keys() & {"metrics", "checkpoints", "result"}:
            summary["notes"].append(
                "No metric row was lost: rows whose write failed were kept and stored later."
            )
        res = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.owner == owner, Run.status == RunStatus.RUNNING.value)
            .values(
                status=status.value,
                finished_at=utcnow(),
                heartbeat_at=utcnow(),
                error=error,
                summary=summary,
                has_model=bool(outcome is not None and outcome.weights is not None),
            )
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # lost the claim: write nothing, not even buffered metrics
            sink.buffer = []
            return False
        insert_metrics(s, rows)  # same transaction as the owner-guarded update
        delete_checkpoint(s, run_id)  # a finished run has nothing to resume
        if outcome is not None and data is not None:
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
            art.current_weights = None
            art.meta = data.metadata()
            art.predictions = _json_safe(preds)
            art.revision = (art.revision or 0) + 1
    sink.written(rows)  # committed
    return True


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
