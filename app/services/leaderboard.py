"""Leaderboard: KAN, MLP and scikit-learn baselines cross-validated on the same grouped folds.

This module holds the pure part (no database): a :class:`LeaderboardModel` names a model and its
settings, :func:`train_fold` trains one spec on one fold (inputs standardised on the fitting
rows, regression targets too; KAN/MLP stop early on a grouped inner validation split) and
scores it on the fold's test rows, :func:`cross_validate` does every fold of a
:class:`~app.services.evaluation.Split`, and :func:`leaderboard_rows` turns results into the
table the API and the benchmark print (mean ± std over folds, train time, parameter count).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from sqlalchemy.orm import Session

from app.services import baselines
from app.services.datasets import get_dataset, load_frame
from app.services.errors import InvalidInputError, NotFoundError
from app.services.evaluation import (
    Split,
    SplitSpec,
    classification_metrics,
    group_labels,
    inner_validation_split,
    make_split,
    regression_metrics,
    summarise_folds,
)
from app.services.model_contract import PreparedData, TrainingJob, TrainOutcome
from app.services.model_registry import available_models, get_model_spec
from app.services.run_data import standardised
from app.services.runs import create_run, list_runs
from kan_core.io import model_from_bytes
from kan_core.train import FitProgress

__all__ = [
    "CVResult",
    "FoldResult",
    "LeaderboardModel",
    "UnknownModelKindError",
    "cross_validate",
    "default_model_specs",
    "leaderboard_rows",
    "train_fold",
]

Task = Literal["regression", "classification"]
NETWORK_KINDS = ("kan", "mlp")

# Training settings a spec may override (kan_core.train.FitConfig fields) and model settings.
_FIT_KEYS = {
    "steps",
    "lr",
    "optimizer",
    "batch_size",
    "lamb",
    "lamb_l1",
    "lamb_entropy",
    "update_grid_every",
    "update_grid_until",
    "grid_eps",
    "early_stopping_patience",
    "log_every",
}
_KAN_KEYS = {"hidden", "grid", "k", "basis"}
_MLP_KEYS = {"hidden", "activation"}
_COMMON_KEYS = {"val_fraction"}


class UnknownModelKindError(InvalidInputError, ValueError):
    """A model kind or setting that does not exist (HTTP 422)."""


@dataclass(frozen=True)
class LeaderboardModel:
    """One leaderboard entry. ``kind``: any registered model kind
    (:mod:`app.services.model_registry`: ``kan``, ``mlp``, the scikit-learn baselines, plugins);
    ``params``: for ``kan`` / ``mlp`` their settings, for other kinds their ``model_options``."""

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        models = available_models()
        if self.kind not in models:
            raise UnknownModelKindError(
                f"Unknown model kind {self.kind!r}. Available: {sorted(models)}."
            )
        if self.kind in NETWORK_KINDS:
            allowed = _FIT_KEYS | _COMMON_KEYS | (_KAN_KEYS if self.kind == "kan" else _MLP_KEYS)
            unknown = sorted(set(self.params) - allowed)
            if unknown:
                raise UnknownModelKindError(
                    f"Unknown setting(s) {unknown} for {self.kind}; allowed: {sorted(allowed)}."
                )
        elif (check := models[self.kind].check_config) is not None:  # as a run's options
            check({"model_options": dict(self.params)})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "params": dict(self.params)}


#: the leaderboard's KAN: small, regularised, quantile-like grid updates (benchmarks/bench_hea.py)
DEFAULT_KAN_PARAMS: dict[str, Any] = {"hidden": [4], "grid": 5, "lamb": 1e-3, "grid_eps": 0.02}


def default_model_specs(task: Task, network_steps: int | None = None) -> list[LeaderboardModel]:
    """The leaderboard's default line-up: a small regularised KAN, an MLP(64, 64) and the three
    baselines. The KAN settings are the ones benchmarks/bench_hea.py reports. ``network_steps``:
    the networks' step limit (default :func:`network_defaults`)."""
    limit = {"steps": int(network_steps)} if network_steps else {}
    return [
        LeaderboardModel("KAN", "kan", DEFAULT_KAN_PARAMS | limit),
        LeaderboardModel("MLP", "mlp", {"hidden": [64, 64]} | limit),
        LeaderboardModel(baselines.baseline_label("linear", task).capitalize(), "linear"),
        LeaderboardModel("Random forest", "random_forest"),
        LeaderboardModel("Gradient boosting", "gradient_boosting"),
    ]


@dataclass
class FoldResult:
    fold: int
    metrics: dict[str, float]
    train_time_s: float
    n_parameters: int
    test_rows: list[int]
    predictions: list[Any]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class CVResult:
    spec: LeaderboardModel
    task: Task
    folds: list[FoldResult]

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        per_fold = [
            {**f.metrics, "train_time_s": f.train_time_s, "n_parameters": float(f.n_parameters)}
            for f in self.folds
        ]
        return summarise_folds(per_fold)

    def predictions(self, n_rows: int) -> list[Any]:
        """Out-of-fold prediction for every row (None where a row was in no test fold)."""
        out: list[Any] = [None] * n_rows
        for f in self.folds:
            for row, p in zip(f.test_rows, f.predictions, strict=True):
                out[row] = p
        return out


def network_defaults(kind: str) -> dict[str, Any]:
    """Training settings a leaderboard KAN / MLP uses unless its params say otherwise."""
    return {
        "steps": 2000,
        "lr": 1e-2 if kind == "kan" else 3e-3,
        "early_stopping_patience": 100,
        "update_grid_every": 10 if kind == "kan" else 0,
        "update_grid_until": 100,
    }


def _fold_config(spec: LeaderboardModel, task: Task, seed: int, has_val: bool) -> dict[str, Any]:
    """The run config the kind's trainer gets for one fold: a network's settings over
    :func:`network_defaults` (no early stopping without validation rows), or ``model_options``."""
    config: dict[str, Any] = {"model": spec.kind, "task": task, "seed": seed}
    if spec.kind not in NETWORK_KINDS:
        return config | {"model_options": dict(spec.params) or None}
    config |= network_defaults(spec.kind) | {"hidden": [4]} | dict(spec.params)
    if isinstance(config.get("update_grid_until"), float):
        config["update_grid_until"] = int(config["update_grid_until"])
    if not has_val:
        config["early_stopping_patience"] = None
    return config


def _fold_data(
    task: Task,
    x: np.ndarray,
    target: np.ndarray,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    classes: Sequence[Any] | None,
) -> PreparedData:
    """A fold's rows as a trainer's data: inputs (and regression targets) standardised on the
    fitting rows, float32, as :func:`app.services.run_data.prepare_data` does for a run."""
    x_scaler, x_fit, x_val = standardised(x[fit_rows], x[val_rows])
    y_scaler = None
    if task == "regression":
        column = target.reshape(-1, 1)
        y_scaler, y_fit, y_val = standardised(column[fit_rows], column[val_rows])
    else:
        y_fit = torch.as_tensor(target[fit_rows], dtype=torch.long)
        y_val = torch.as_tensor(target[val_rows], dtype=torch.long) if len(val_rows) else None
    return PreparedData(
        task=task,
        feature_names=[f"x{i}" for i in range(x.shape[1])],
        target_names=["y"],
        x_train=x_fit,
        y_train=y_fit,
        x_val=x_val,
        y_val=y_val,
        train_rows=np.asarray(fit_rows, dtype=np.int64),
        val_rows=np.asarray(val_rows, dtype=np.int64),
        x_scaler=x_scaler,
        y_scaler=y_scaler,
        classes=[str(c) for c in classes] if classes is not None else None,
        n_rows_dropped=0,
    )


def _test_predictions(
    outcome: TrainOutcome, data: PreparedData, x_test: np.ndarray, early_stopping: bool
) -> tuple[np.ndarray, torch.nn.Module | None]:
    """The fold's test predictions in the trainer's units (standardised regression values or
    class indices): from the model in ``outcome.weights`` for a kind that stops early on its
    inner validation rows, else its validation predictions (its validation rows are the test
    rows). Returns (predictions, the model or None)."""
    if not early_stopping:
        if outcome.val_predictions is None:
            raise InvalidInputError("The model kind returned no predictions for the test rows.")
        return np.asarray(outcome.val_predictions), None
    if outcome.weights is None:
        raise InvalidInputError("The model kind stops early but returned no model weights.")
    model, _ = model_from_bytes(outcome.weights)
    with torch.no_grad():
        out = model(data.x_scaler.transform(torch.as_tensor(x_test, dtype=torch.float32)))
    return (out.argmax(-1).numpy() if data.task == "classification" else out.numpy()), model


def train_fold(
    spec: LeaderboardModel,
    task: Task,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    *,
    fold: int = 0,
    seed: int = 0,
    classes: Sequence[Any] | None = None,
    callback: Callable[[FitProgress], bool | None] | None = None,
    device: str = "cpu",
) -> FoldResult:
    """Train ``spec`` on ``train_rows`` with its kind's registered trainer and score it on
    ``test_rows``.

    Classification targets are class labels; ``classes`` (all labels of the dataset, sorted)
    fixes the network's output order. A kind that stops early (``ModelSpec.early_stopping``:
    KAN, MLP) holds out a grouped ``val_fraction`` (default 0.2) of the training rows for it;
    the others train on all training rows. ``callback`` sees the trainer's progress and stops
    it by returning False.
    """
    spec.validate()
    kind = get_model_spec(spec.kind)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y)
    if task == "classification":
        classes = list(classes) if classes is not None else sorted(set(y.tolist()))
        target = np.searchsorted(np.asarray(classes), y)
    else:
        target = y.astype(float)
    if kind.early_stopping:
        fraction = float(spec.params.get("val_fraction", 0.2))
        fit_rows, val_rows = inner_validation_split(train_rows, groups, fraction, seed)
    else:
        fit_rows, val_rows = train_rows, test_rows
    data = _fold_data(task, x, target, fit_rows, val_rows, classes)
    last_step = 0

    def report(p: FitProgress) -> bool:
        nonlocal last_step
        last_step = int(p.step)
        return callback is None or callback(p) is not False

    config = _fold_config(spec, task, seed, has_val=len(val_rows) > 0)
    start = time.perf_counter()
    outcome = kind.train(TrainingJob(0, config, data, report, device))
    elapsed = float(outcome.extra.get("train_time_s", time.perf_counter() - start))
    out, model = _test_predictions(outcome, data, x[test_rows], kind.early_stopping)
    if task == "regression":
        assert data.y_scaler is not None
        original = data.y_scaler.inverse_transform(torch.as_tensor(out))  # out's own dtype
        pred: np.ndarray = original.reshape(-1).numpy().astype(float)
    else:
        pred = np.asarray(classes)[np.asarray(out).reshape(-1)]
    info: dict[str, Any] = {
        "best_step": outcome.extra.get("best_step"),
        "stopped_reason": outcome.stopped_reason,
        "steps_run": last_step,
        "width": outcome.extra.get("width"),
    }
    if model is not None:
        info |= {"model": model, "x_scaler": data.x_scaler, "y_scaler": data.y_scaler}
    truth = y[test_rows]
    metrics = (
        regression_metrics(truth.astype(float), pred)
        if task == "regression"
        else classification_metrics(truth, pred)
    )
    return FoldResult(
        fold=fold,
        metrics=metrics,
        train_time_s=elapsed,
        n_parameters=int(outcome.n_parameters),
        test_rows=[int(r) for r in test_rows],
        predictions=[float(v) if task == "regression" else v for v in pred.tolist()],
        info=info,
    )


def cross_validate(
    spec: LeaderboardModel,
    task: Task,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    split: Split,
    *,
    keep_models: bool = False,
) -> CVResult:
    """Every fold of ``split`` for one spec; fold k trains with seed ``split.spec.seed + k``."""
    classes = sorted(set(np.asarray(y).tolist())) if task == "classification" else None
    folds = []
    for k, (train_rows, test_rows) in enumerate(split.folds()):
        result = train_fold(
            spec,
            task,
            x,
            y,
            groups,
            train_rows,
            test_rows,
            fold=k,
            seed=split.spec.seed + k,
            classes=classes,
        )
        if not keep_models:
            for key in ("model", "x_scaler", "y_scaler"):
                result.info.pop(key, None)
        folds.append(result)
    return CVResult(spec=spec, task=task, folds=folds)


def leaderboard_rows(results: Sequence[CVResult]) -> list[dict[str, Any]]:
    """One row per model, best score first, as the stored leaderboard's table (:func:`_scores`)
    — for the benchmark, which cross-validates without a database."""
    rows = [
        {"name": r.spec.name, "kind": r.spec.kind, **_scores(r.task, r.summary)}
        | {"n_folds": len(r.folds)}
        for r in results
    ]
    rows.sort(key=lambda r: (r["score_mean"] is None, -(r["score_mean"] or 0.0)))
    return rows


def _scores(task: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """A table row's scores from a fold summary (:func:`summarise_folds`): R² or accuracy, MAE
    or macro F1 (mean and std), train time per fold, parameter count; None where not finite."""
    score = "r2" if task == "regression" else "accuracy"
    second = "mae" if task == "regression" else "f1_macro"

    def stat(name: str, key: str) -> float | None:
        v = (summary.get(name) or {}).get(key)
        return v if isinstance(v, (int, float)) and math.isfinite(v) else None

    n_params = stat("n_parameters", "mean")
    return {
        "score_name": score,
        "score_mean": stat(score, "mean"),
        "score_std": stat(score, "std"),
        "second_name": second,
        "second_mean": stat(second, "mean"),
        "second_std": stat(second, "std"),
        "train_time_s_mean": stat("train_time_s", "mean"),
        "n_parameters": int(round(n_params)) if n_params is not None else None,
    }


# ── runs: a leaderboard is one cross-validated run per model, all on the same folds ────────

NETWORK_RUN_KEYS = sorted(_FIT_KEYS | _COMMON_KEYS | _KAN_KEYS | _MLP_KEYS)


def _entry_from_config(config: Mapping[str, Any]) -> LeaderboardModel:
    entry = config["cv"]["entry"]
    return LeaderboardModel(entry["name"], entry["kind"], dict(entry.get("params") or {}))


def train_cross_validated(job: TrainingJob) -> TrainOutcome:
    """The trainer for a run whose config carries ``cv`` (see :func:`start_leaderboard`):
    every fold of the stored split, trained as :func:`train_fold` does, with progress and
    cancellation through the run's reporter. Returns a ``TrainOutcome`` whose ``extra["cv"]``
    holds per-fold metrics, their summary and the out-of-fold predictions."""
    data, config = job.data, job.config
    spec = _entry_from_config(config)
    split = Split.from_dict(config["cv"]["split"])
    groups = np.asarray(config["cv"]["groups"]).astype(str)
    task: Task = data.task
    rows = np.sort(np.concatenate([data.train_rows, data.val_rows]).astype(np.int64))
    order = np.argsort(np.concatenate([data.train_rows, data.val_rows]))
    x_std = torch.cat([data.x_train] + ([data.x_val] if data.x_val is not None else []))
    x = data.x_scaler.inverse_transform(x_std).double().numpy()[order]
    y_std = torch.cat([data.y_train] + ([data.y_val] if data.y_val is not None else []))
    if task == "regression":
        assert data.y_scaler is not None
        y: np.ndarray = data.y_scaler.inverse_transform(y_std).double().numpy()[order, 0]
    else:
        y = np.asarray(data.classes, dtype=object)[y_std.numpy()[order]]
    if split.n_rows <= int(rows.max(initial=0)):
        raise InvalidInputError("The stored split does not cover this dataset's rows.")
    fold_of = split.fold_of_row[rows]
    step_offset = 0
    cancelled = False
    stop = False  # the run's reporter said stop (cancel requested, claim lost)
    folds: list[FoldResult] = []
    for k in range(split.spec.n_splits):
        train_pos, test_pos = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        if len(test_pos) == 0 or len(train_pos) < 2:
            continue  # every row of this fold had missing values

        def report(p: FitProgress, offset: int = step_offset) -> bool:
            nonlocal stop
            renumbered = FitProgress(
                offset + p.step, p.total_steps, p.train_loss, p.val_loss, p.val_metric,
                p.elapsed_s,
            )  # fmt: skip
            stop = stop or not job.report(renumbered)
            return not stop

        result = train_fold(
            spec, task, x, y, groups[rows], train_pos, test_pos, fold=k,
            seed=split.spec.seed + k, classes=data.classes, callback=report, device=job.device,
        )  # fmt: skip
        result.test_rows = [int(rows[i]) for i in result.test_rows]
        for key in ("model", "x_scaler", "y_scaler"):
            result.info.pop(key, None)
        step_offset += max(1, int(result.info["steps_run"])) + 1
        folds.append(result)
        if stop or result.info.get("stopped_reason") == "cancelled":
            cancelled = True
            break
    cv = CVResult(spec=spec, task=task, folds=folds)
    summary = cv.summary
    score = "r2" if task == "regression" else "accuracy"
    oof_rows = [r for f in folds for r in f.test_rows]
    oof_pred = [p for f in folds for p in f.predictions]
    position = {int(r): n for n, r in enumerate(rows)}
    extra_cv = {
        "leaderboard_id": config["cv"].get("leaderboard_id"),
        "entry": spec.to_dict(),
        "split_fingerprint": split.fingerprint(),
        "score_name": score,
        "summary": summary,
        "folds": [
            {
                "fold": f.fold,
                "metrics": f.metrics,
                "train_time_s": f.train_time_s,
                "n_parameters": f.n_parameters,
                "n_test": len(f.test_rows),
                "best_step": f.info.get("best_step"),
            }
            for f in folds
        ],
        "predictions": {
            "rows": oof_rows,
            "y_true": [
                float(y[position[r]]) if task == "regression" else str(y[position[r]])
                for r in oof_rows
            ],
            "y_pred": [float(p) if task == "regression" else str(p) for p in oof_pred],
        },
    }
    mean = summary.get(score, {}).get("mean")
    n_params = summary.get("n_parameters", {}).get("mean", 0.0)
    return TrainOutcome(
        stopped_reason="cancelled" if cancelled else "completed",
        train_loss=None,
        val_loss=None,
        val_metric=mean if mean is not None and math.isfinite(mean) else None,
        n_parameters=int(round(n_params)) if math.isfinite(n_params) else 0,
        weights=None,
        val_predictions=None,
        extra={"cv": extra_cv},
    )


def start_leaderboard(
    session: Session,
    dataset_id: int,
    *,
    target_columns: Sequence[str],
    task: Task,
    feature_columns: Sequence[str] | None = None,
    split: SplitSpec | None = None,
    models: Sequence[LeaderboardModel] | None = None,
    network_steps: int | None = None,
    max_parameters: int = 2_000_000,
    device: str = "cpu",
) -> tuple[str, list[Any]]:
    """Create one queued cross-validated run per model, all on the same stored split (the
    caller commits and submits the runs to the executor). Returns (leaderboard id, runs)."""
    split = split or SplitSpec()
    models = list(models) if models else default_model_specs(task, network_steps)
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"Leaderboard model names must be unique; got {names}.")
    for m in models:
        m.validate()
    frame = load_frame(session, dataset_id)
    if split.stratify and task != "classification":
        raise InvalidInputError("Stratified folds are for classification targets.")
    made = make_split(frame, split, target=target_columns[0] if split.stratify else None)
    _, codes = np.unique(group_labels(frame, split.group_by), return_inverse=True)
    leaderboard_id = uuid.uuid4().hex[:12]
    runs = []
    for m in models:
        if m.kind in NETWORK_KINDS:
            params = {**network_defaults(m.kind), **dict(m.params)}
            run_params = {k: v for k, v in params.items() if k not in _COMMON_KEYS}
        else:
            run_params = {"model_options": dict(m.params)}
        payload = {
            "dataset_id": dataset_id,
            "name": f"{m.name} · {split.n_splits}-fold CV",
            "model": m.kind,
            "task": task,
            "target_columns": list(target_columns),
            "feature_columns": list(feature_columns) if feature_columns else None,
            "val_fraction": 0.0,
            "seed": split.seed,
            "device": device,
            **run_params,
            "cv": {
                "leaderboard_id": leaderboard_id,
                "entry": {"name": m.name, "kind": m.kind, "params": dict(m.params)},
                "split": made.to_dict(),
                "groups": codes.astype(int).tolist(),
            },
        }
        run, _ = create_run(session, payload, max_parameters)
        runs.append(run)
    return leaderboard_id, runs


def _leaderboard_runs(session: Session, dataset_id: int) -> list[Any]:
    return [
        r for r in list_runs(session, dataset_id=dataset_id, limit=10_000)
        if isinstance(r.config, dict) and isinstance(r.config.get("cv"), dict)
    ]  # fmt: skip


def list_leaderboards(session: Session, dataset_id: int) -> list[dict[str, Any]]:
    """Leaderboards of a dataset, newest first: id, target, split, run ids and statuses."""
    get_dataset(session, dataset_id)
    boards: dict[str, dict[str, Any]] = {}
    for run in sorted(_leaderboard_runs(session, dataset_id), key=lambda r: r.id):
        cv = run.config["cv"]
        board = boards.setdefault(
            cv["leaderboard_id"],
            {
                "id": cv["leaderboard_id"],
                "dataset_id": dataset_id,
                "task": run.task,
                "target_columns": run.config.get("target_columns"),
                "feature_columns": run.config.get("feature_columns"),
                "split": cv["split"]["spec"],
                "n_groups": cv["split"]["n_groups"],
                "created_at": run.created_at,
                "runs": [],
            },
        )
        board["runs"].append({"run_id": run.id, "name": cv["entry"]["name"], "status": run.status})
    return sorted(boards.values(), key=lambda b: -min(r["run_id"] for r in b["runs"]))


def get_leaderboard(
    session: Session, dataset_id: int, leaderboard_id: str, with_predictions: bool = True
) -> dict[str, Any]:
    """The table (one row per model, best score first, unfinished runs last) and, per model,
    the out-of-fold predicted-vs-measured pairs."""
    runs = [
        r for r in _leaderboard_runs(session, dataset_id)
        if r.config["cv"].get("leaderboard_id") == leaderboard_id
    ]  # fmt: skip
    if not runs:
        raise NotFoundError(f"Dataset {dataset_id} has no leaderboard {leaderboard_id!r}.")
    runs.sort(key=lambda r: r.id)
    task = runs[0].task
    rows, predictions = [], []
    for run in runs:
        cv = (run.summary or {}).get("cv") or {}
        entry = run.config["cv"]["entry"]
        rows.append(
            {
                "run_id": run.id,
                "name": entry["name"],
                "kind": entry["kind"],
                "status": run.status,
                "error": run.error,
                **_scores(task, cv.get("summary") or {}),
                "n_folds": len(cv.get("folds") or []),
                "folds": cv.get("folds") or [],
            }
        )
        if with_predictions and cv.get("predictions"):
            predictions.append({"run_id": run.id, "name": entry["name"], **cv["predictions"]})
    rows.sort(key=lambda r: (r["score_mean"] is None, -(r["score_mean"] or 0.0), r["run_id"]))
    first = runs[0].config
    return {
        "id": leaderboard_id,
        "dataset_id": dataset_id,
        "task": task,
        "target_columns": first.get("target_columns"),
        "feature_columns": first.get("feature_columns"),
        "split": first["cv"]["split"]["spec"],
        "n_groups": first["cv"]["split"]["n_groups"],
        "split_fingerprint": first["cv"]["split"]["fingerprint"],
        "complete": all(r.status in ("succeeded", "failed", "cancelled") for r in runs),
        "rows": rows,
        "predictions": predictions,
    }
