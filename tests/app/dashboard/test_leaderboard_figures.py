"""The leaderboard page's pure builders: table rows, progress, plots and the request body."""

from __future__ import annotations

import math

import pytest

from app.dashboard import figures
from app.dashboard.alloy_components import NO_GROUPS, build_request


def board(task: str = "regression") -> dict:
    score, second = ("r2", "mae") if task == "regression" else ("accuracy", "f1_macro")

    def row(run_id, name, status, mean, std, params, time_s=0.5, error=None):
        return {
            "run_id": run_id,
            "name": name,
            "kind": name.lower(),
            "status": status,
            "error": error,
            "score_name": score,
            "score_mean": mean,
            "score_std": std,
            "second_name": second,
            "second_mean": None if mean is None else 10.0,
            "second_std": None if mean is None else 1.5,
            "train_time_s_mean": None if mean is None else time_s,
            "n_parameters": params,
            "n_folds": 0 if mean is None else 3,
            "folds": [],
        }

    if task == "regression":
        preds = [
            {"run_id": 2, "name": "MLP", "rows": [0, 1, 2], "y_true": [1.0, 2.0, 3.0],
             "y_pred": [1.1, 1.9, 3.2]},
            {"run_id": 1, "name": "KAN", "rows": [0, 1, 2], "y_true": [1.0, 2.0, 3.0],
             "y_pred": [0.9, 2.1, 2.9]},
        ]  # fmt: skip
    else:
        preds = [
            {"run_id": 1, "name": "KAN", "rows": [0, 1, 2, 3], "y_true": ["BCC", "FCC", "FCC",
             "BCC"], "y_pred": ["BCC", "FCC", "BCC", "BCC"]},
        ]  # fmt: skip
    return {
        "id": "abc",
        "dataset_id": 1,
        "task": task,
        "split": {"n_splits": 3, "group_by": "composition", "seed": 0},
        "n_groups": 12,
        "complete": False,
        "rows": [
            row(1, "KAN", "succeeded", 0.91234, 0.0321, 185, 1.234),
            row(2, "MLP", "succeeded", 0.85, 0.05, 4545),
            row(3, "Ridge", "failed", None, None, None, error="Singular matrix: drop a column"),
            row(4, "Random forest", "running", None, None, None),
        ],
        "predictions": preds,
    }


def test_table_rows_show_mean_std_time_parameters_and_rank_only_finished_models():
    data, columns = figures.leaderboard_table(board())
    assert [c["name"] for c in columns][:5] == [
        "rank",
        "model",
        "status",
        "R² (mean ± std)",
        "MAE (mean ± std)",
    ]
    assert [r["model"] for r in data] == ["KAN", "MLP", "Ridge", "Random forest"]
    assert [r["rank"] for r in data] == [1, 2, "", ""]
    assert data[0]["score"] == "0.912 ± 0.032"
    assert data[0]["second"] == "10 ± 1.5"
    assert data[0]["time"] == "1.2" and data[0]["parameters"] == "185"
    assert data[1]["parameters"] == "4,545"
    assert data[2]["score"] == "–" and data[2]["error"].startswith("Singular matrix")
    assert data[3]["time"] == "–" and data[3]["folds"] == 0
    assert data[0]["run"] == "[1](/runs/1)"
    assert next(c for c in columns if c["id"] == "run")["presentation"] == "markdown"


def test_classification_table_names_accuracy_and_macro_f1():
    _, columns = figures.leaderboard_table(board("classification"))
    names = [c["name"] for c in columns]
    assert "accuracy (mean ± std)" in names and "macro F1 (mean ± std)" in names


def test_progress_counts_finished_runs():
    assert figures.leaderboard_progress(board()) == (3, 4)
    assert figures.leaderboard_progress({"rows": []}) == (0, 0)


def test_prediction_figures_follow_table_order_with_the_ideal_line():
    plots = figures.leaderboard_prediction_figures(board())
    assert [name for name, _ in plots] == ["KAN", "MLP"]
    kan = plots[0][1]
    assert kan.layout.title.text == "KAN · R² 0.912"
    points = next(t for t in kan.data if t.name == "out-of-fold")
    assert list(points.x) == [1.0, 2.0, 3.0] and list(points.y) == [0.9, 2.1, 2.9]
    ideal = next(t for t in kan.data if t.name == "ideal")
    assert list(ideal.x) == [0.9, 3.0]


def test_prediction_figures_thin_out_large_series():
    big = board()
    n = 5000
    big["predictions"] = [
        {"run_id": 1, "name": "KAN", "rows": list(range(n)), "y_true": [float(i) for i in range(n)],
         "y_pred": [float(i) for i in range(n)]}
    ]  # fmt: skip
    (_, fig), = figures.leaderboard_prediction_figures(big, max_points=1000)  # fmt: skip
    points = next(t for t in fig.data if t.name == "out-of-fold")
    assert 900 <= len(points.x) <= 1000


def test_classification_gives_a_confusion_matrix():
    (name, fig), = figures.leaderboard_prediction_figures(board("classification"))  # fmt: skip
    assert name == "KAN"
    heat = fig.data[0]
    assert list(heat.x) == ["BCC", "FCC"]
    # rows = predicted, columns = measured: one FCC measured as BCC
    assert [list(r) for r in heat.z] == [[2, 1], [0, 1]]


def test_mean_std_handles_missing_and_nan():
    assert figures._mean_std(None, 0.1) == "–"
    assert figures._mean_std(math.nan, 0.1) == "–"
    assert figures._mean_std(0.5, None) == "0.5"


def test_request_body_carries_split_features_and_network_step_limit():
    body = build_request("HV", ["vec", "HV", "delta"], "regression", "composition", 3, 40, 7)
    assert body["target_columns"] == ["HV"]
    assert body["feature_columns"] == ["vec", "delta"]  # the target is never a feature
    assert body["split"] == {"n_splits": 3, "group_by": "composition", "seed": 7}
    # the line-up is the API's default (one source of its settings), with the networks' limit
    assert "models" not in body and body["network_steps"] == 40
    plain = build_request("HV", ["vec"], "classification", NO_GROUPS, 5, None, None)
    assert plain["split"]["group_by"] is None and plain["split"]["seed"] == 0
    assert "models" not in plain and "network_steps" not in plain


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, ["a"], "regression", None, 5, None, 0), "target"),
        (("y", ["y"], "regression", None, 5, None, 0), "feature"),
        (("y", ["a"], "regression", None, 1, None, 0), "Folds"),
        (("y", ["a"], "regression", None, None, None, 0), "Folds"),
        (("y", ["a"], "regression", None, 5, 0, 0), "steps"),
    ],
)
def test_request_body_says_what_to_fix(args, message):
    with pytest.raises(ValueError, match=message):
        build_request(*args)


def test_train_fold_reports_network_progress_to_its_callback():
    """The Train page's K-fold option and the leaderboard's progress rely on it."""
    import numpy as np

    from app.services.leaderboard import LeaderboardModel, train_fold

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    y = x[:, 0] - 0.5 * x[:, 1]
    groups = np.arange(60).astype(str)
    seen = []
    spec = LeaderboardModel("KAN", "kan", {"hidden": [2], "steps": 12, "update_grid_every": 0})
    result = train_fold(
        spec, "regression", x, y, groups, np.arange(45), np.arange(45, 60),
        callback=lambda p: seen.append(p.step) is None,
    )  # fmt: skip
    assert seen and max(seen) <= 12 and len(seen) >= 10
    assert len(result.predictions) == 15
