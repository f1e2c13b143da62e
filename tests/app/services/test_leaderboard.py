"""Baselines and the leaderboard's pure part: every model on the same grouped folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_limits

from app.services import baselines, leaderboard
from app.services.evaluation import SplitSpec, make_split
from app.services.leaderboard import LeaderboardModel, UnknownModelKindError


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: threads only add spin-waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3).astype(str)  # 40 "alloys", 3 measurements each
    base = rng.normal(size=(40, 3))
    x = base[np.repeat(np.arange(40), 3)] + 0.01 * rng.normal(size=(120, 3))
    y = np.sin(x[:, 0]) + x[:, 1] ** 2 + 0.05 * rng.normal(size=120)
    return x, y, groups


@pytest.mark.parametrize("kind", baselines.BASELINE_KINDS)
def test_baselines_fit_and_count_parameters(regression_data, kind):
    x, y, _ = regression_data
    fitted = baselines.fit_baseline(kind, "regression", x, y, seed=0)
    assert fitted.n_parameters > 0
    assert fitted.train_time_s > 0
    pred = fitted.predict(x)
    assert pred.shape == (120,)
    assert np.corrcoef(pred, y)[0, 1] > 0.5  # learned something
    if kind == "linear":
        assert fitted.n_parameters == 4  # 3 weights + intercept


def test_baseline_classification_and_errors(regression_data):
    x, y, _ = regression_data
    labels = np.where(y > np.median(y), "hard", "soft")
    fitted = baselines.fit_baseline("linear", "classification", x, labels)
    assert fitted.classes == ["hard", "soft"]
    assert fitted.predict_proba(x).shape == (120, 2)
    assert baselines.baseline_label("linear", "classification") == "logistic regression"
    with pytest.raises(baselines.UnknownBaselineError, match="Available"):
        baselines.make_estimator("svm", "regression")
    with pytest.raises(baselines.UnknownBaselineError, match="allowed"):
        baselines.make_estimator("random_forest", "regression", params={"depth": 3})


def test_every_model_uses_the_same_grouped_folds(regression_data):
    x, y, groups = regression_data
    split = make_split(pd.DataFrame({"g": groups}), SplitSpec(n_splits=4, group_by="g", seed=1))
    specs = [
        LeaderboardModel("KAN", "kan", {"hidden": [2], "steps": 60, "grid": 3}),
        LeaderboardModel("MLP", "mlp", {"hidden": [8], "steps": 60}),
        LeaderboardModel("RF", "random_forest", {"n_estimators": 20}),
    ]
    results = [leaderboard.cross_validate(s, "regression", x, y, groups, split) for s in specs]
    for r in results:
        assert [f.test_rows for f in r.folds] == [t.tolist() for _, t in split.folds()]
        oof = r.predictions(len(y))
        assert all(p is not None for p in oof)
    rows = leaderboard.leaderboard_rows(results)
    assert [r["score_name"] for r in rows] == ["r2"] * 3
    assert rows[0]["score_mean"] >= rows[1]["score_mean"] >= rows[2]["score_mean"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["KAN"]["n_parameters"] == results[0].folds[0].n_parameters > 0
    assert by_name["RF"]["score_mean"] > 0.5
    # the KAN's inner validation rows share no group with its fitting rows
    assert results[0].folds[0].info["best_step"] >= 1


def test_classification_leaderboard(regression_data):
    x, y, groups = regression_data
    labels = np.where(y > np.median(y), "hard", "soft")
    split = make_split(pd.DataFrame({"g": groups}), SplitSpec(n_splits=3, group_by="g"))
    r = leaderboard.cross_validate(
        LeaderboardModel("KAN", "kan", {"hidden": [2], "steps": 40}),
        "classification",
        x,
        labels,
        groups,
        split,
    )
    assert set(r.predictions(len(y))) <= {"hard", "soft"}
    row = leaderboard.leaderboard_rows([r])[0]
    assert row["score_name"] == "accuracy" and 0.5 < row["score_mean"] <= 1.0


def test_spec_validation():
    with pytest.raises(UnknownModelKindError, match="Available"):
        LeaderboardModel("x", "xgboost").validate()
    with pytest.raises(UnknownModelKindError, match="allowed"):
        LeaderboardModel("x", "kan", {"activation": "relu"}).validate()
    assert [s.kind for s in leaderboard.default_model_specs("regression")] == [
        "kan",
        "mlp",
        "linear",
        "random_forest",
        "gradient_boosting",
    ]


def test_a_plugin_model_kind_joins_a_leaderboard(regression_data, monkeypatch):
    """Any registered kind: here the KANSCOPE_MODEL_PLUGINS example, predicting the mean of each
    fold's training targets (it returns validation predictions only, and stops on nothing)."""
    import importlib
    import sys

    from app.services import model_registry

    monkeypatch.setattr(model_registry, "MODEL_REGISTRY", dict(model_registry.MODEL_REGISTRY))
    monkeypatch.delitem(sys.modules, "tests.app.mean_baseline_plugin", raising=False)
    importlib.import_module("tests.app.mean_baseline_plugin")  # registers "mean_baseline"
    x, y, groups = regression_data
    split = make_split(pd.DataFrame({"g": groups}), SplitSpec(n_splits=3, group_by="g", seed=1))
    spec = LeaderboardModel("Mean", "mean_baseline")
    result = leaderboard.cross_validate(spec, "regression", x, y, groups, split)
    for (train_rows, _), fold in zip(split.folds(), result.folds, strict=True):
        assert fold.predictions == pytest.approx(
            [float(y[train_rows].mean())] * len(fold.test_rows)
        )
        assert fold.metrics["r2"] <= 0.0 and fold.n_parameters == 1
    row = leaderboard.leaderboard_rows([result])[0]
    assert row["kind"] == "mean_baseline" and row["n_folds"] == 3
