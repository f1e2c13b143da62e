"""Grouped K-fold cross-validation: splits that keep one alloy (or any group) on one side.

A :class:`SplitSpec` (folds, what to group by, seed, stratify) plus the data gives a
:class:`Split`: the fold of every row. The split is stored with a run as :meth:`Split.to_dict`
(spec, per-row fold ids and a SHA-256 fingerprint) and rebuilt from the spec alone by
:func:`make_split`; :meth:`Split.verify_against` tells whether the stored folds still match the
data. Metrics per fold and their mean ± std live here too, so every model kind (KAN, MLP,
scikit-learn baselines) is scored the same way.

Pure functions over pandas / NumPy; no database.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from app.services import alloys
from app.services.errors import InvalidInputError
from kan_core.metrics import r2_score

__all__ = [
    "COMPOSITION",
    "Split",
    "SplitError",
    "SplitSpec",
    "classification_metrics",
    "group_labels",
    "inner_validation_split",
    "make_split",
    "regression_metrics",
    "summarise_folds",
]

#: ``group_by`` value meaning "the alloy composition" (detected formula or element columns).
COMPOSITION = "composition"
_MISSING_GROUP = "\x00missing"


class SplitError(InvalidInputError, ValueError):
    """The requested split cannot be made on this data (a user error, HTTP 422)."""


@dataclass(frozen=True)
class SplitSpec:
    """K-fold settings. ``group_by``: ``"composition"``, a column name, or None (rows are their
    own groups: plain shuffled K-fold). ``stratify`` balances the target's classes over folds
    (classification) with StratifiedGroupKFold."""

    n_splits: int = 5
    group_by: str | None = COMPOSITION
    seed: int = 0
    stratify: bool = False

    def validate(self) -> None:
        if not isinstance(self.n_splits, int) or self.n_splits < 2:
            raise SplitError(f"n_splits must be an integer ≥ 2, got {self.n_splits!r}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SplitError(f"seed must be an integer ≥ 0, got {self.seed!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SplitSpec:
        known = {"n_splits", "group_by", "seed", "stratify"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SplitError(f"Unknown split option(s) {unknown}; known: {sorted(known)}.")
        spec = cls(**dict(d))
        spec.validate()
        return spec


@dataclass(frozen=True)
class Split:
    spec: SplitSpec
    fold_of_row: np.ndarray  # (n_rows,) int, fold in which the row is a test row
    n_groups: int

    @property
    def n_rows(self) -> int:
        return int(self.fold_of_row.shape[0])

    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(train_rows, test_rows)]`` per fold, row positions sorted ascending."""
        rows = np.arange(self.n_rows)
        return [
            (rows[self.fold_of_row != k], rows[self.fold_of_row == k])
            for k in range(self.spec.n_splits)
        ]

    def fingerprint(self) -> str:
        payload = json.dumps(self.spec.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload + self.fold_of_row.astype("<i4").tobytes()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "n_rows": self.n_rows,
            "n_groups": self.n_groups,
            "fold_of_row": self.fold_of_row.astype(int).tolist(),
            "fingerprint": self.fingerprint(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Split:
        split = cls(
            spec=SplitSpec.from_dict(d["spec"]),
            fold_of_row=np.asarray(d["fold_of_row"], dtype=np.int64),
            n_groups=int(d["n_groups"]),
        )
        if "fingerprint" in d and d["fingerprint"] != split.fingerprint():
            raise SplitError("Stored split is corrupt: its fingerprint does not match its folds.")
        return split

    def verify_against(self, df: pd.DataFrame, target: str | None = None) -> bool:
        """True when rebuilding the split from its spec on ``df`` gives the same folds."""
        return make_split(df, self.spec, target=target).fingerprint() == self.fingerprint()


def group_labels(df: pd.DataFrame, group_by: str | None) -> np.ndarray:
    """One label per row. ``"composition"`` (unless the table has a column of that name) uses
    :func:`app.services.alloys.composition_keys`, so ``Al0.5CoCrFeNi`` and
    ``Al0.5 Co1 Cr1 Fe1 Ni1`` are one group; empty cells of a named column form one group."""
    if group_by is None:
        return np.arange(len(df)).astype(str).astype(object)
    if group_by in df.columns:
        values = df[group_by]
        labels = values.astype(str).to_numpy(dtype=object)
        labels[values.isna().to_numpy()] = _MISSING_GROUP
        return labels
    if group_by == COMPOSITION:
        try:
            return alloys.composition_keys(df)
        except alloys.CompositionError as exc:
            raise SplitError(f"Cannot group by composition: {exc}") from None
    raise SplitError(
        f"Cannot group by {group_by!r}: no such column. Use 'composition' or one of "
        f"{list(df.columns)}."
    )


def make_split(
    df: pd.DataFrame, spec: SplitSpec | None = None, *, target: str | None = None
) -> Split:
    """The K-fold split of ``df`` for ``spec``; the same data and spec always give the same
    folds. ``target`` is needed when ``spec.stratify``."""
    spec = spec or SplitSpec()
    spec.validate()
    groups = group_labels(df, spec.group_by)
    # integer codes in first-appearance order: independent of the label strings' sort order
    _, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    codes = order[codes]
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if n_groups < spec.n_splits:
        what = "rows" if spec.group_by is None else f"distinct groups ({spec.group_by})"
        raise SplitError(
            f"{spec.n_splits}-fold cross-validation needs at least {spec.n_splits} {what}; "
            f"the data has {n_groups}. Use fewer folds."
        )
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold  # slow: see baselines

    x_dummy = np.zeros((len(df), 1))
    if spec.stratify:
        if target is None or target not in df.columns:
            raise SplitError("Stratified folds need the target column.")
        y = df[target].astype(str).to_numpy()
        splitter: Any = StratifiedGroupKFold(
            n_splits=spec.n_splits, shuffle=True, random_state=spec.seed
        )
        parts = splitter.split(x_dummy, y, codes)
    else:
        splitter = GroupKFold(n_splits=spec.n_splits, shuffle=True, random_state=spec.seed)
        parts = splitter.split(x_dummy, None, codes)
    fold_of_row = np.full(len(df), -1, dtype=np.int64)
    for k, (_, test) in enumerate(parts):
        fold_of_row[test] = k
    if (fold_of_row < 0).any() or len(np.unique(fold_of_row)) != spec.n_splits:
        raise SplitError("Could not make non-empty folds; use fewer folds.")  # pragma: no cover
    return Split(spec=spec, fold_of_row=fold_of_row, n_groups=n_groups)


def inner_validation_split(
    train_rows: np.ndarray, groups: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of the training *groups* (for early stopping), so the
    validation rows share no group with the rows the model fits."""
    train_rows = np.asarray(train_rows)
    sub_groups = np.asarray(groups)[train_rows]
    if len(np.unique(sub_groups)) < 2:
        return train_rows, train_rows[:0]
    from sklearn.model_selection import GroupShuffleSplit  # slow to import: see baselines

    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    fit_pos, val_pos = next(splitter.split(np.zeros((len(train_rows), 1)), None, sub_groups))
    return train_rows[np.sort(fit_pos)], train_rows[np.sort(val_pos)]


Task = Literal["regression", "classification"]


def regression_metrics(
    y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """R² (:func:`kan_core.metrics.r2_score`: NaN for a constant target), MAE, RMSE of one
    fold."""
    y = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_pred, dtype=float).reshape(-1)
    return {
        "r2": r2_score(y, p),
        "mae": float(np.abs(y - p).mean()),
        "rmse": math.sqrt(float(((y - p) ** 2).mean())),
    }


def classification_metrics(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray
) -> dict[str, float]:
    """Accuracy and macro-averaged F1 of one fold."""
    y = np.asarray(y_true)
    p = np.asarray(y_pred)
    f1s = []
    for label in np.unique(np.concatenate([y, p])):
        tp = float(((p == label) & (y == label)).sum())
        denom = float((p == label).sum() + (y == label).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float((y == p).mean()), "f1_macro": float(np.mean(f1s))}


def summarise_folds(per_fold: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std", "min", "max"}}`` over folds (std with ddof=0, NaNs ignored)."""
    names = sorted({k for fold in per_fold for k in fold})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = np.array([fold.get(name, math.nan) for fold in per_fold], dtype=float)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            out[name] = {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
            continue
        out[name] = {
            "mean": float(finite.mean()),
            "std": float(finite.std()),
            "min": float(finite.min()),
            "max": float(finite.max()),
        }
    return out
