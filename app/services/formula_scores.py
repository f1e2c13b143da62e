"""A formula's values and scores on rows of a table (original units): a discovery run's formulas
on the held-out rows, a KAN formula on the run's validation rows (``formula_process``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from app.services.numbers import finite_or_none
from kan_core.metrics import r2_score


def formula_values(expr: Any, symbols: Any, x: np.ndarray) -> np.ndarray | None:
    """The formula on rows ``x`` (column k feeds ``symbols[k]``), float64, one value per row
    (a constant formula too); None if it cannot be evaluated there."""
    from kan_core.export import ExportError, compile_expression

    if len(x) == 0:
        return np.zeros(0)
    rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    try:
        with torch.no_grad():
            out = compile_expression(expr, symbols)(rows)
    except (ExportError, RuntimeError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    pred = np.broadcast_to(out.to(torch.float64).numpy(), (len(x),)).copy()
    return pred if np.isfinite(pred).all() else None


def formula_scores(pred: np.ndarray | None, y: np.ndarray) -> dict[str, float | None]:
    """R² and RMSE of ``pred`` for ``y`` (None where there is nothing to score or a value is
    not finite)."""
    if pred is None or len(y) == 0:
        return {"r2": None, "rmse": None}
    y = np.asarray(y, dtype=np.float64)
    mse = float(np.mean((pred - y) ** 2))
    return {"r2": finite_or_none(r2_score(y, pred)), "rmse": finite_or_none(math.sqrt(mse))}
