"""A trained run's predictions for rows it has never seen: a CSV in (the run's feature columns,
any others kept as they are), the same rows out with the prediction appended.

The run's current model predicts (after any symbolic edits, as the formula and the edge plots
show it); an ensemble run adds its members' mean and calibrated interval. A row with a missing
feature gets no prediction and says which; a feature outside the range the model was trained on
is named in the row's note (the prediction is extrapolation there). Text a spreadsheet would run
as a formula is quoted, as in every export.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pandas as pd
import torch

from app.services.datasets import parse_csv
from app.services.ensemble_views import prediction_intervals
from app.services.errors import ConflictError, InvalidInputError
from app.services.exports import ExportFile, interval_cells, interval_header, spreadsheet_safe
from app.services.inspection import LoadedModel, load_model
from app.services.memory import InspectionShape, inspection_rows
from app.services.runs import get_run

#: data rows named in an error before "and N more"
SHOWN_ROWS = 5
#: rows per forward pass of a model that is not a KAN (an MLP's activations are small)
OTHER_MODEL_BATCH = 8192


def predict_rows_csv(
    session: Any, run_id: int, raw: bytes, max_rows: int, max_columns: int
) -> ExportFile:
    run = get_run(session, run_id)
    if not run.has_model:
        raise ConflictError(
            f"Run {run_id} has no trained model to predict with (status {run.status}, model "
            f"{run.model}): predictions for new rows come from KAN, MLP and the other network "
            "runs once they have succeeded."
        )
    loaded = load_model(session, run_id)
    data = loaded.data
    frame = parse_csv(raw, max_rows, max_columns)
    features = data.feature_names
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"The file lacks the run's feature column(s) {missing}. It needs {features}; other "
            "columns are kept in the answer as they are."
        )
    values = _numeric_features(frame, features)
    complete = np.isfinite(values).all(axis=1)
    x = data.x_scaler.transform(torch.tensor(values[complete], dtype=torch.float32))
    out, interval = _predict(session, run, loaded, x)
    names = list(data.target_names)
    header: list[object] = [*map(str, frame.columns)]
    cells: list[list[Any]] = [[] for _ in range(len(frame))]
    if data.task == "classification":
        classes = data.classes or []
        probs = torch.softmax(out, dim=-1).numpy()
        header += [f"{names[0]}_pred", f"{names[0]}_probability"]
        for k, row in enumerate(np.flatnonzero(complete).tolist()):
            best = int(probs[k].argmax())
            cells[row] = [classes[best], float(probs[k, best])]
    else:
        assert data.y_scaler is not None
        pred = data.y_scaler.inverse_transform(out).numpy()
        header += [f"{n}_pred" for n in names]
        header += interval_header(interval, names)  # an ensemble's, as in the predictions CSV
        for k, row in enumerate(np.flatnonzero(complete).tolist()):
            cells[row] = [float(v) for v in pred[k]] + interval_cells(interval, k)
    width = len(header) - frame.shape[1]
    notes = _notes(values, complete, features, data.x_scaler.inverse_transform(data.x_train))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([spreadsheet_safe(h) for h in [*header, "note"]])
    for original, predicted, note in zip(frame.itertuples(index=False), cells, notes, strict=True):
        padded = predicted + [""] * (width - len(predicted))
        kept = ["" if _missing(v) else spreadsheet_safe(v) for v in original]
        writer.writerow([*kept, *("" if v is None else v for v in padded), note])
    return ExportFile(
        buf.getvalue().encode(), "text/csv; charset=utf-8", f"run-{run_id}-new-predictions.csv"
    )


def _predict(
    session: Any, run: Any, loaded: LoadedModel, x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The model's outputs for ``x`` (standardised) and, for an ensemble run, its interval
    (``prediction_intervals``' lists, row by row), in batches that keep a KAN under
    KANSCOPE_MAX_RUN_MEMORY_MB (422 when not even a small batch fits)."""
    data = loaded.data
    if len(x) == 0:
        return torch.zeros((0, data.n_outputs)), {}
    step = min(len(x), OTHER_MODEL_BATCH)
    if getattr(loaded.model, "kind", None) == "kan":
        shape = InspectionShape.of(loaded.model)
        what = f"run {loaded.run_id}'s KAN"
        step = inspection_rows(shape, "predict", len(x), what=what)
    outs: list[torch.Tensor] = []
    interval: dict[str, Any] = {}
    for start in range(0, len(x), step):
        batch = x[start : start + step]
        with torch.no_grad():
            outs.append(loaded.model(batch).cpu())
        if data.task == "regression" and (part := prediction_intervals(session, run, data, batch)):
            if not interval:
                interval = {**part, "y_mean": [], "lower": [], "upper": []}
            for key in ("y_mean", "lower", "upper"):
                interval[key] += part[key]
    return torch.cat(outs), interval


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not np.isfinite(value))


def _numeric_features(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """The feature columns as numbers; empty cells are missing values, anything else that is
    not a number is an error naming the column and its first rows (1 = the first data row)."""
    values = frame[features].apply(pd.to_numeric, errors="coerce").astype("float64")
    for name in features:
        bad = values[name].isna() & frame[name].notna()
        if bad.any():
            rows = [int(r) + 1 for r in np.flatnonzero(bad.to_numpy())]
            more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
            first = frame[name][bad].iloc[0]
            raise InvalidInputError(
                f"Feature column {name!r} must hold numbers; data row(s) "
                f"{rows[:SHOWN_ROWS]}{more} do not (the first: {str(first)[:40]!r})."
            )
    return values.to_numpy()


def _notes(
    values: np.ndarray, complete: np.ndarray, features: list[str], train: torch.Tensor
) -> list[str]:
    """Per row: which features are missing (no prediction), or which lie outside the training
    rows' range (the prediction is extrapolation there)."""
    lo, hi = train.min(dim=0).values.numpy(), train.max(dim=0).values.numpy()
    notes = []
    for row, ok in zip(values, complete, strict=True):
        if not ok:
            gone = [f for f, v in zip(features, row, strict=True) if not np.isfinite(v)]
            notes.append(f"no prediction: missing {', '.join(gone)}")
            continue
        out = [f for f, v, a, b in zip(features, row, lo, hi, strict=True) if v < a or v > b]
        notes.append(f"outside the training range: {', '.join(out)}" if out else "")
    return notes
