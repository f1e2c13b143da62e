"""scikit-learn estimators: KANRegressor and KANClassifier.

Real scikit-learn estimators (``BaseEstimator`` + ``RegressorMixin`` / ``ClassifierMixin``):
they clone, work in ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``, keep a DataFrame's
column names (``feature_names_in_``, used as the formula's symbols) and pass scikit-learn's
estimator checks (``tests/kan_core/test_sklearn.py`` lists the few that are skipped, and why).

Inputs are mapped linearly onto the KAN's grid range [-1, 1]; regression targets are
standardised only when they are far from the scale of a fresh KAN's outputs (see
``target_scaling``). The scalers are kept on the estimator, so predictions and formulas come
out in the original units.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import sympy
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from kan_core.discover import DiscoveryResult, discover
from kan_core.errors import ConfigError
from kan_core.model import KAN
from kan_core.scaling import Standardizer
from kan_core.train import FitConfig, FitResult, TrainData, fit

TargetScaling = Literal["auto", "standardize", "none"]


def _target_scaler(y: torch.Tensor, mode: TargetScaling) -> Standardizer:
    """How regression targets (rows, outputs) are scaled for training.

    ``"auto"`` standardises a column only when its standard deviation is below 0.1 or its RMS
    above 10, i.e. when it is far from what a fresh KAN outputs. A target already on that scale
    is fitted as it is: centring and rescaling it costs accuracy (the README's hello-KAN data,
    50 L-BFGS steps: test RMSE 2.7e-3 as is, 7-12e-3 standardised, over three seeds).
    """
    if mode not in ("auto", "standardize", "none"):
        raise ConfigError(
            f"Unknown target_scaling {mode!r}. Available: ['auto', 'none', 'standardize']"
        )
    fitted = Standardizer.fit(y)
    if mode == "standardize":
        return fitted
    keep = torch.ones(y.shape[1], dtype=torch.bool)
    if mode == "auto":
        rms = y.to(torch.float64).pow(2).mean(0).sqrt()
        keep = (fitted.std >= 0.1) & (rms <= 10.0)
    mean = torch.where(keep, torch.zeros_like(fitted.mean), fitted.mean)
    std = torch.where(keep, torch.ones_like(fitted.std), fitted.std)
    return Standardizer(mean, std)


class _KANEstimator(BaseEstimator):
    """Shared parameters and training. ``optimizer`` / ``lr`` left at ``None`` take the task's
    default: L-BFGS with lr 1 for regression, Adam with lr 1e-2 for classification.
    ``target_scaling`` (regression only): ``"auto"`` standardises a target only when it is far
    from a KAN's output scale (:func:`_target_scaler`), ``"standardize"`` always, ``"none"``
    never."""

    task: Literal["regression", "classification"] = "regression"
    default_optimizer: Literal["adam", "lbfgs"] = "lbfgs"
    default_lr = 1.0

    def __init__(
        self,
        hidden: Sequence[int] = (5,),
        grid: int = 5,
        k: int = 3,
        basis: str = "bspline",
        steps: int = 200,
        optimizer: Literal["adam", "lbfgs"] | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        lamb: float = 0.0,
        val_fraction: float = 0.0,
        early_stopping_patience: int | None = None,
        seed: int = 0,
        device: str | None = None,
        target_scaling: TargetScaling = "auto",
    ) -> None:
        # stored exactly as given (scikit-learn's clone and get_params rely on it)
        self.hidden = hidden
        self.grid = grid
        self.k = k
        self.basis = basis
        self.steps = steps
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.lamb = lamb
        self.val_fraction = val_fraction
        self.early_stopping_patience = early_stopping_patience
        self.seed = seed
        self.device = device
        self.target_scaling = target_scaling

    def _train(self, x: np.ndarray, y: torch.Tensor, n_out: int) -> None:
        hidden = [int(h) for h in np.atleast_1d(np.asarray(self.hidden))]  # (5,), [5] or 5
        xt = torch.from_numpy(np.array(x, dtype=np.float32))  # a copy: X may be read-only
        self.x_scaler_ = Standardizer.fit_range(xt)
        self.model_ = KAN(
            [x.shape[1], *hidden, n_out],
            grid=self.grid,
            k=self.k,
            basis=self.basis,
            seed=self.seed,
            device=self.device,
        )
        data = TrainData.split(self.x_scaler_.transform(xt), y, self.val_fraction, self.seed)
        cfg = FitConfig(
            steps=self.steps,
            optimizer=self.optimizer or self.default_optimizer,
            lr=self.default_lr if self.lr is None else self.lr,
            batch_size=self.batch_size,
            task=self.task,
            lamb=self.lamb,
            early_stopping_patience=self.early_stopping_patience,
            seed=self.seed,
        )
        self.fit_result_: FitResult = fit(self.model_, data, cfg)

    def _raw(self, X: Any) -> torch.Tensor:
        check_is_fitted(self, "model_")
        x = validate_data(self, X, reset=False, dtype=np.float64)
        xt = self.x_scaler_.transform(torch.from_numpy(np.array(x, dtype=np.float64)))
        # a float64 copy: float32 GEMMs round differently with the batch size, and an estimator's
        # predictions must not depend on which other rows come with a row
        model = copy.deepcopy(self.model_).to(torch.float64)
        device = next(model.parameters()).device
        with torch.no_grad():
            return model(xt.to(device)).cpu()


class KANRegressor(RegressorMixin, _KANEstimator):
    """A KAN regressor, one or several targets; ``score`` is R² (averaged uniformly over
    outputs); ``discovery()`` / ``formula()`` / ``sympy()`` search a formula for the target."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any) -> KANRegressor:
        x, yv = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        yv = np.asarray(yv, dtype=np.float64)
        self._single_output = yv.ndim == 1
        y2 = torch.from_numpy(np.array(yv.reshape(len(yv), -1)))
        # kept for formula(): discovery reads the training table, not the network alone
        self._fit_data = (x, yv)
        self._feature_names = (
            [str(c) for c in self.feature_names_in_] if hasattr(self, "feature_names_in_") else None
        )
        self._discovery: dict[tuple[float, float | None], DiscoveryResult] = {}
        self.y_scaler_ = _target_scaler(y2, self.target_scaling)
        self._train(x, self.y_scaler_.transform(y2).to(torch.float32), y2.shape[1])
        return self

    def predict(self, X: Any) -> np.ndarray:
        raw = self._raw(X).to(torch.float64)
        pred = self.y_scaler_.inverse_transform(raw).numpy()
        return pred[:, 0] if self._single_output else pred

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


class KANClassifier(ClassifierMixin, _KANEstimator):
    """A KAN classifier over any labels; ``predict_proba`` columns follow ``classes_``;
    ``score`` is accuracy."""

    task = "classification"
    default_optimizer = "adam"
    default_lr = 1e-2

    def fit(self, X: Any, y: Any) -> KANClassifier:
        x, yv = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(yv)
        self.classes_, codes = np.unique(yv, return_inverse=True)
        if len(self.classes_) < 2:
            raise ConfigError(
                "Classifier can't train when only one class is present: y needs at least two "
                "classes"
            )
        self._train(x, torch.from_numpy(codes.astype(np.int64)), len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return torch.softmax(self._raw(X).to(torch.float64), dim=-1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(-1)]
