"""scikit-learn baselines for the leaderboard: linear (ridge / logistic), random forest,
gradient boosting — built by name, fitted on one fold, counted in parameters.

"Parameters" of a tree ensemble are its tree nodes (each split node holds a feature and a
threshold, each leaf a value), so the count is comparable in spirit, not in kind, with a
network's weights. Fitted estimators are not persisted (no pickle); a baseline run keeps its
configuration, its per-fold predictions and metrics, which is what the leaderboard shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from app.services.errors import InvalidInputError
from app.services.model_contract import ModelSpec, PreparedData, TrainingJob, TrainOutcome
from kan_core.metrics import r2_score
from kan_core.train import FitProgress

__all__ = [
    "BASELINE_KINDS",
    "BASELINE_SPECS",
    "BaselineFit",
    "UnknownBaselineError",
    "baseline_label",
    "fit_baseline",
    "make_estimator",
    "parameter_count",
]

Task = Literal["regression", "classification"]

#: kind → (label for regression, label for classification, default hyperparameters)
_KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "linear": ("ridge", "logistic regression", {"alpha": 1.0, "C": 1.0}),
    "random_forest": (
        "random forest",
        "random forest",
        # max_features None: all features for regression, sqrt(n) for classification
        {"n_estimators": 300, "max_features": None, "min_samples_leaf": 1},
    ),
    "gradient_boosting": (
        "gradient boosting",
        "gradient boosting",
        {"max_iter": 300, "learning_rate": 0.05, "max_leaf_nodes": 15, "l2_regularization": 0.0},
    ),
}
BASELINE_KINDS: tuple[str, ...] = tuple(_KINDS)


class UnknownBaselineError(InvalidInputError, ValueError):
    """A baseline name or hyperparameter the user gave does not exist (HTTP 422)."""


def baseline_label(kind: str, task: Task) -> str:
    _check_kind(kind)
    reg, cls, _ = _KINDS[kind]
    return reg if task == "regression" else cls


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise UnknownBaselineError(
            f"Unknown baseline {kind!r}. Available: {sorted(_KINDS)} "
            "('linear' is ridge for regression, logistic regression for classification)."
        )


#: hyperparameter → (type, lowest, highest); bounds keep a fit's time and memory sane
_BOUNDS: dict[str, tuple[type, float, float]] = {
    "alpha": (float, 0.0, 1e6),
    "C": (float, 1e-6, 1e6),
    "n_estimators": (int, 1, 2000),
    "min_samples_leaf": (int, 1, 10_000),
    "max_iter": (int, 1, 5000),
    "learning_rate": (float, 1e-4, 1.0),
    "max_leaf_nodes": (int, 2, 4096),
    "l2_regularization": (float, 0.0, 1e6),
}


def _check_value(kind: str, key: str, value: Any) -> Any:
    if key == "max_features":
        if value is None or value in ("sqrt", "log2"):
            return value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
        if not ok:
            raise UnknownBaselineError(
                f"{kind}: max_features must be null, 'sqrt', 'log2' or a fraction in (0, 1]."
            )
        return float(value)
    cast, low, high = _BOUNDS[key]
    number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number_ok or not (low <= value <= high) or (cast is int and value != int(value)):
        what = "an integer" if cast is int else "a number"
        raise UnknownBaselineError(f"{kind}: {key} must be {what} from {low:g} to {high:g}.")
    return cast(value)


def _params(kind: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    defaults = dict(_KINDS[kind][2])
    unknown = sorted(set(overrides or {}) - set(defaults))
    if unknown:
        raise UnknownBaselineError(
            f"Unknown hyperparameter(s) {unknown} for {kind!r}; allowed: {sorted(defaults)}."
        )
    defaults.update({k: _check_value(kind, k, v) for k, v in (overrides or {}).items()})
    return defaults


def make_estimator(
    kind: str, task: Task, seed: int = 0, params: Mapping[str, Any] | None = None
) -> Any:
    """An unfitted scikit-learn estimator; linear models standardise their inputs first.

    scikit-learn is imported here, not with the module: it costs ~1.5 s of CPU, and every API
    process and trainer imports this module whether or not it fits a baseline."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _check_kind(kind)
    p = _params(kind, params)
    regression = task == "regression"
    if kind == "linear":
        model: Any = (
            Ridge(alpha=float(p["alpha"]))
            if regression
            else LogisticRegression(C=float(p["C"]), max_iter=5000)
        )
        return make_pipeline(StandardScaler(), model)
    if kind == "random_forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        max_features = p["max_features"]
        if max_features is None:
            max_features = 1.0 if regression else "sqrt"
        return cls(
            n_estimators=int(p["n_estimators"]),
            max_features=max_features,
            min_samples_leaf=int(p["min_samples_leaf"]),
            random_state=seed,
            n_jobs=1,
        )
    cls_gb = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    return cls_gb(
        max_iter=int(p["max_iter"]),
        learning_rate=float(p["learning_rate"]),
        max_leaf_nodes=int(p["max_leaf_nodes"]),
        l2_regularization=float(p["l2_regularization"]),
        early_stopping=False,
        random_state=seed,
    )


def parameter_count(estimator: Any) -> int:
    """Learned numbers of a fitted estimator: weights + intercepts for linear models, nodes for
    tree ensembles."""
    from sklearn.pipeline import Pipeline  # loaded already: the estimator is scikit-learn's

    if isinstance(estimator, Pipeline):
        estimator = estimator[-1]
    if hasattr(estimator, "coef_"):
        return int(np.size(estimator.coef_) + np.size(estimator.intercept_))
    if hasattr(estimator, "estimators_"):  # random forest
        return int(sum(tree.tree_.node_count for tree in estimator.estimators_))
    predictors = getattr(estimator, "_predictors", None)  # histogram gradient boosting
    if predictors is not None:
        return int(sum(len(p.nodes) for stage in predictors for p in stage))
    raise TypeError(f"Cannot count parameters of {type(estimator).__name__}")  # pragma: no cover


@dataclass
class BaselineFit:
    kind: str
    task: Task
    estimator: Any
    train_time_s: float
    n_parameters: int
    classes: list[Any] | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.predict(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.task != "classification":
            raise TypeError("predict_proba is for classification baselines")
        return self.estimator.predict_proba(x)


def fit_baseline(
    kind: str,
    task: Task,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> BaselineFit:
    """Fit one baseline on (x, y) and time it (wall clock, fit only)."""
    estimator = make_estimator(kind, task, seed, params)
    y_fit = np.asarray(y).reshape(-1) if task == "regression" else np.asarray(y)
    start = time.perf_counter()
    estimator.fit(np.asarray(x, dtype=float), y_fit)
    elapsed = time.perf_counter() - start
    classes = list(estimator.classes_) if task == "classification" else None
    return BaselineFit(kind, task, estimator, elapsed, parameter_count(estimator), classes)


# ── the baselines as run model kinds ──────────────────────────────────────────────────────────


def _train_job(kind: str) -> Callable[[TrainingJob], TrainOutcome]:
    def train(job: TrainingJob) -> TrainOutcome:
        data, task = job.data, job.data.task
        if task == "regression" and len(data.target_names) != 1:
            raise InvalidInputError(
                f"Baseline {kind!r} fits one target; this run has {len(data.target_names)}."
            )
        x = data.x_train.numpy().astype(float)
        y = data.y_train.numpy().reshape(-1)
        fitted = fit_baseline(
            kind, task, x, y, seed=int(job.config.get("seed", 0)),
            params=job.config.get("model_options") or None,
        )  # fmt: skip
        train_loss, val_loss, val_metric, preds = _losses(fitted, data)
        job.report(FitProgress(1, 1, train_loss, val_loss, val_metric, fitted.train_time_s))
        return TrainOutcome(
            stopped_reason="completed",
            train_loss=train_loss,
            val_loss=val_loss,
            val_metric=val_metric,
            n_parameters=fitted.n_parameters,
            weights=None,
            val_predictions=preds,
            extra={"train_time_s": fitted.train_time_s, "baseline": kind},
        )

    return train


def _losses(
    fitted: BaselineFit, data: PreparedData
) -> tuple[float, float | None, float | None, Any]:
    """(train loss, val loss, val R² / accuracy, val predictions) in the trainer's units:
    MSE on standardised targets, or cross-entropy; predictions (n, 1) standardised / class ids."""
    x_tr = data.x_train.numpy().astype(float)
    y_tr = data.y_train.numpy().reshape(-1)
    if data.task == "regression":
        train_loss = float(np.mean((fitted.predict(x_tr) - y_tr) ** 2))
    else:
        train_loss = _cross_entropy(fitted, x_tr, y_tr)
    if data.x_val is None or data.y_val is None or len(data.x_val) == 0:
        return train_loss, None, None, None
    x_val = data.x_val.numpy().astype(float)
    y_val = data.y_val.numpy().reshape(-1)
    pred = fitted.predict(x_val)
    if data.task == "regression":
        val_loss = float(np.mean((pred - y_val) ** 2))
        return train_loss, val_loss, r2_score(y_val, pred), pred.reshape(-1, 1)
    val_loss = _cross_entropy(fitted, x_val, y_val)
    return train_loss, val_loss, float(np.mean(pred == y_val)), pred.astype(np.int64)


def _cross_entropy(fitted: BaselineFit, x: np.ndarray, y: np.ndarray) -> float:
    proba = fitted.predict_proba(x)
    column = {c: n for n, c in enumerate(fitted.classes or [])}
    picked = np.array([proba[i, column[c]] if c in column else 0.0 for i, c in enumerate(y)])
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def _options_checker(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check_config(config: dict[str, Any]) -> dict[str, Any]:
        """``ModelSpec.check_config``: the run's ``model_options`` are this baseline's
        hyperparameters within bounds (unknown keys refused, naming the allowed ones)."""
        _params(kind, config.get("model_options") or None)
        return config

    return check_config


_DESCRIPTIONS = {
    "linear": "Ridge regression / logistic regression on standardised inputs (scikit-learn)",
    "random_forest": "Random forest, 300 trees (scikit-learn)",
    "gradient_boosting": "Histogram gradient boosting, 300 iterations (scikit-learn)",
}
BASELINE_SPECS: tuple[ModelSpec, ...] = tuple(
    ModelSpec(
        kind,
        _DESCRIPTIONS[kind],
        ("regression", "classification"),
        _train_job(kind),
        check_config=_options_checker(kind),
    )
    for kind in BASELINE_KINDS
)
