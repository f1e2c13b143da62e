"""kan_core.metrics.r2_score: the one R² (library and app), NaN for a constant target."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score as sklearn_r2

from kan_core.metrics import r2_score


def test_r2_matches_the_textbook_formula_one_and_several_outputs() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 3)) * [1.0, 10.0, 0.1]
    p = y + rng.normal(size=y.shape) * 0.3
    assert r2_score(y[:, 0], p[:, 0]) == pytest.approx(sklearn_r2(y[:, 0], p[:, 0]), abs=1e-12)
    # several outputs: sums over all of them (variance-weighted), not a mean of per-output R²
    weighted = sklearn_r2(y, p, multioutput="variance_weighted")
    assert r2_score(y, p) == pytest.approx(weighted, abs=1e-12)
    assert r2_score(y, p) != pytest.approx(sklearn_r2(y, p), abs=1e-3)
    # tensors (float32, kept in their dtype) and a flat prediction for a column target
    t = r2_score(torch.tensor(y[:, :1], dtype=torch.float32), torch.tensor(p[:, 0]).float())
    assert t == pytest.approx(r2_score(y[:, 0], p[:, 0]), abs=1e-5)


@pytest.mark.parametrize(
    "y",
    [
        np.full(5, 3.0),
        np.full(3, 0.1),  # its float64 mean is 0.10000000000000002: SS_tot 3e-34, not 0
        np.ones((4, 2)),
        np.zeros(0),
    ],
)
def test_a_constant_target_has_no_r2_exact_fit_or_not(y: np.ndarray) -> None:
    assert math.isnan(r2_score(y, y))
    assert math.isnan(r2_score(y, y + 1.0))


def test_every_r2_of_the_app_follows_the_convention() -> None:
    """The leaderboard's fold score and a run's validation metric agree with it."""
    from app.services.evaluation import regression_metrics
    from kan_core.model import KAN
    from kan_core.train import evaluate

    assert math.isnan(regression_metrics([2.0, 2.0, 2.0], [2.0, 2.0, 2.0])["r2"])
    y, p = [1.0, 2.0, 4.0], [1.5, 2.0, 3.0]
    assert regression_metrics(y, p)["r2"] == pytest.approx(r2_score(y, p), abs=1e-15)
    model = KAN([2, 1], grid=3, seed=0)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert evaluate(model, x, out + 0.1 * x[:, :1], "regression")[1] == pytest.approx(
        r2_score(out + 0.1 * x[:, :1], out)
    )
    assert math.isnan(evaluate(model, x, torch.ones(20, 1), "regression")[1])
