"""Scores of a model's predictions, written once for the library and the app.

:func:`r2_score` is the one R² of kanscope: training's validation metric, a run's and a
leaderboard fold's score, a formula's and a network's R², discovery's held-out R² all call it.
(Two scores are deliberately something else: the symbolic candidate fit's per-edge corr², a
ranking device, and the scikit-learn facades' ``score``, which is scikit-learn's ``r2_score``
as their contract with scikit-learn requires.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def r2_score(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination R² = 1 − SS_res / SS_tot of ``y_pred`` for ``y_true``.

    Shapes: (n,) or (n, k) (``y_pred`` is reshaped to ``y_true``'s shape); numpy arrays,
    sequences (float64) or tensors (on any device). With several outputs the sums run over all
    of them, each centred on its own mean (variance-weighted, not a plain average of per-output
    R²). Computed in the inputs' floating dtype (float64 for integers), on their device.

    **A constant target** (every output column constant, or n = 0) has no variance for a
    model to explain: R² is undefined there and this returns NaN — whatever the prediction,
    exact or not (the API shows it as null). 1 for an exact fit and 0 otherwise (scikit-learn's
    ``force_finite``) would rank models on the rounding of an exact fit, and 1 − SS_res/ε on
    a column whose mean did not round back to its values would be a huge negative number.
    Non-finite predictions give a non-finite R² (NaN or −inf), never a number that looks valid.
    """
    y = y_true if isinstance(y_true, torch.Tensor) else torch.from_numpy(np.asarray(y_true))
    p = y_pred if isinstance(y_pred, torch.Tensor) else torch.from_numpy(np.asarray(y_pred))
    dtype = torch.promote_types(y.dtype, p.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    if y.numel() == 0:
        return math.nan
    y = y.to(dtype).reshape(y.shape[0] if y.ndim else 1, -1)  # (n, k)
    p = p.to(y.device, dtype).reshape(y.shape)
    if bool((y == y[:1]).all()):
        return math.nan
    ss_res = float(((p - y) ** 2).sum())
    ss_tot = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
