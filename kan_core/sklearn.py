"""scikit-learn style facades: KANRegressor and KANClassifier (fit / predict / score).

Inputs (and regression targets) are standardised inside; the scalers are kept on the estimator
so predictions and formulas come out in the original units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy
import torch

from kan_core.discover import DiscoveryResult, discover
from kan_core.errors import ConfigError
from kan_core.model import KAN
from kan_core.scaling import Standardizer
from kan_core.train import FitConfig, FitResult, TrainData, fit


def _as_2d(x: Any) -> torch.Tensor:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ConfigError(f"X must be 2-D (rows, features), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError("X contains NaN or infinite values; drop or impute them first")
    return torch.from_numpy(arr)


class _KANEstimator:
    task = "regression"

    def __init__(
        self,
        hidden: Sequence[int] = (5,),
        grid: int = 5,
        k: int = 3,
        basis: str = "bspline",
        steps: int = 200,
        optimizer: str = "lbfgs",
        lr: float = 1.0,
        batch_size: int | None = None,
        lamb: float = 0.0,
        val_fraction: float = 0.0,
        early_stopping_patience: int | None = None,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        self.hidden, self.grid, self.k, self.basis = tuple(hidden), grid, k, basis
        self.steps, self.optimizer, self.lr, self.batch_size = steps, optimizer, lr, batch_size
        self.lamb, self.val_fraction = lamb, val_fraction
        self.early_stopping_patience, self.seed, self.device = early_stopping_patience, seed, device

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        keys = (
            "hidden",
            "grid",
            "k",
            "basis",
            "steps",
            "optimizer",
            "lr",
            "batch_size",
            "lamb",
            "val_fraction",
            "early_stopping_patience",
            "seed",
            "device",
        )
        return {key: getattr(self, key) for key in keys}

    def set_params(self, **params: Any) -> _KANEstimator:
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def _fit(self, x: torch.Tensor, y: torch.Tensor, n_out: int) -> _KANEstimator:
        self.x_scaler_ = Standardizer.fit(x)
        xs = self.x_scaler_.transform(x)
        self.model_ = KAN(
            [x.shape[1], *self.hidden, n_out],
            grid=self.grid,
            k=self.k,
            basis=self.basis,
            seed=self.seed,
            device=self.device,
        )
        data = TrainData.split(xs, y, self.val_fraction, self.seed)
        cfg = FitConfig(
            steps=self.steps,
            optimizer=self.optimizer,  # type: ignore[arg-type]
            lr=self.lr,
            batch_size=self.batch_size,
            task=self.task,  # type: ignore[arg-type]
            lamb=self.lamb,
            early_stopping_patience=self.early_stopping_patience,
            seed=self.seed,
        )
        self.fit_result_: FitResult = fit(self.model_, data, cfg)
        self.n_features_in_ = x.shape[1]
        return self

    def _raw(self, x: Any) -> torch.Tensor:
        if not hasattr(self, "model_"):
            raise ConfigError("this estimator is not fitted yet: call fit(X, y) first")
        xt = _as_2d(x)
        if xt.shape[1] != self.n_features_in_:
            raise ConfigError(
                f"X has {xt.shape[1]} features, the model was fitted on {self.n_features_in_}"
            )
        device = next(self.model_.parameters()).device
        with torch.no_grad():
            return self.model_(self.x_scaler_.transform(xt).to(device)).cpu()


class KANRegressor(_KANEstimator):
    task = "regression"

    def fit(self, X: Any, y: Any) -> KANRegressor:
        x = _as_2d(X)
        yt = _as_2d(y)
        self._single_output = np.asarray(y).ndim == 1
        # kept for formula(): discovery reads the training table, not the network alone
        self._fit_data = (np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))
        self._feature_names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        self._discovery: dict[tuple[float, float | None], DiscoveryResult] = {}
        self.y_scaler_ = Standardizer.fit(yt)
        self._fit(x, self.y_scaler_.transform(yt), yt.shape[1])
        return self

    def predict(self, X: Any) -> np.ndarray:
        raw = self._raw(X)
        pred = self.y_scaler_.inverse_transform(raw).numpy()
        return pred[:, 0] if self._single_output else pred

    def score(self, X: Any, y: Any) -> float:
        """R² (averaged uniformly over outputs)."""
        yt = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        pred = np.asarray(self.predict(X), dtype=np.float64).reshape(yt.shape)
        ss_res = ((yt - pred) ** 2).sum(0)
        ss_tot = ((yt - yt.mean(0)) ** 2).sum(0)
        return float(np.mean(1 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0)))

    def discovery(
        self, budget_s: float = 60, noise: float | None = None, names: Sequence[str] | None = None
    ) -> DiscoveryResult:
        """`kan_core.discover` on the training data (cached per budget and noise level)."""
        if not hasattr(self, "model_"):
            raise ConfigError("this estimator is not fitted yet: call fit(X, y) first")
        x, y = self._fit_data
        if y.ndim != 1 and y.shape[1] != 1:
            raise ConfigError("formula discovery takes one target column; fit on a 1-D y")
        key = (float(budget_s), noise)
        if key not in self._discovery:
            self._discovery[key] = discover(
                x, y.reshape(-1), names or self._feature_names, budget_s=budget_s,
                noise=noise, seed=self.seed,
            )  # fmt: skip
        return self._discovery[key]

    def sympy(self, budget_s: float = 60, noise: float | None = None) -> sympy.Expr:
        """The discovered formula as a sympy expression of the feature symbols."""
        return self.discovery(budget_s, noise).expr

    def formula(self, budget_s: float = 60, noise: float | None = None) -> str:
        """The discovered formula as text (the simplest within noise of the best)."""
        return self.discovery(budget_s, noise).formula.text


class KANClassifier(_KANEstimator):
    task = "classification"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("optimizer", "adam")
        kwargs.setdefault("lr", 1e-2)
        super().__init__(**kwargs)

    def fit(self, X: Any, y: Any) -> KANClassifier:
        x = _as_2d(X)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ConfigError("classification needs at least two classes in y")
        self._fit(x, torch.from_numpy(codes.astype(np.int64)), len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return torch.softmax(self._raw(X), dim=-1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(-1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy."""
        return float((self.predict(X) == np.asarray(y)).mean())
