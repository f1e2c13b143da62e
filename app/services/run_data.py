"""A run's data: its columns checked against the dataset (:func:`resolve_columns`) and its table
turned into standardised train / validation tensors (:func:`prepare_data`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from app.services.errors import InvalidInputError
from app.services.model_contract import PreparedData
from kan_core.scaling import Standardizer


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


def standardised(
    train: np.ndarray, val: np.ndarray
) -> tuple[Standardizer, torch.Tensor, torch.Tensor | None]:
    """(scaler, train, val): float32 copies of the ``train`` and ``val`` rows (n, cols),
    standardised with the training rows' statistics; val None when it has no rows."""
    raw = torch.tensor(train, dtype=torch.float32)
    scaler = Standardizer.fit(raw)
    val_std = scaler.transform(torch.tensor(val, dtype=torch.float32)) if len(val) else None
    return scaler, scaler.transform(raw), val_std


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

    x_scaler, x_train, x_val = standardised(x_all[train_rows], x_all[val_rows])
    classes: list[str] | None = None
    y_scaler: Standardizer | None = None
    if task == "regression":
        y_scaler, y_train, y_val = standardised(y_all[train_rows], y_all[val_rows])
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
