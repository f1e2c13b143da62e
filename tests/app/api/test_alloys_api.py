"""The alloy workflow through the API on SQLite and PostgreSQL, with real training processes:
upload the raw MPEA CSV → featurise its formula column (row errors listed, the user decides) →
a leaderboard (KAN, MLP, ridge, random forest on the same grouped folds, stored as runs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.app.api_helpers import upload, wait_for

DEMO = Path(__file__).resolve().parents[3] / "app" / "demo_data"
DESCRIPTORS = ["vec", "delta_pct", "smix_J_molK", "dhmix_kJ_mol", "tm_K", "delta_chi", "omega"]


@pytest.fixture(scope="module")
def mpea_csv() -> bytes:
    return (DEMO / "MPEA_dataset.csv").read_bytes()


def test_featurise_reports_rows_and_lets_the_user_decide(client, mpea_csv):
    ds = upload(client, mpea_csv, "MPEA_dataset.csv")
    info = client.get(f"/api/datasets/{ds['id']}/composition").json()
    assert info["detected"] == {
        "kind": "formula", "formula_column": "FORMULA", "element_columns": {}
    }  # fmt: skip
    assert info["descriptors"]["dhmix_kJ_mol"]["unit"] == "kJ/mol"

    dry = client.post(f"/api/datasets/{ds['id']}/featurise", json={"dry_run": True})
    assert dry.status_code == 200, dry.text
    report = dry.json()["report"]
    assert dry.json()["dataset"] is None
    assert report["n_errors"] == 38 and report["rows_ok"] == 1545 - 38
    assert report["errors"][0] == {
        "row": 68, "line": 70, "value": "Al1 C0.1 Co1 Cr1 Fe1 Ni1",
        "reason": "composition contains elements not in elemental data table: ['C']",
    }  # fmt: skip
    assert len(client.get("/api/datasets").json()) == 1  # nothing created

    refused = client.post(f"/api/datasets/{ds['id']}/featurise", json={})
    assert refused.status_code == 422
    assert "38 of 1545 rows cannot be featurised" in refused.json()["detail"]
    assert "row 68 ('Al1 C0.1 Co1 Cr1 Fe1 Ni1')" in refused.json()["detail"]

    made = client.post(
        f"/api/datasets/{ds['id']}/featurise", json={"on_error": "drop", "name": "MPEA feat"}
    )
    assert made.status_code == 201, made.text
    new = made.json()["dataset"]
    assert new["parent_id"] == ds["id"] and new["name"] == "MPEA feat"
    assert new["n_rows"] == 1545 - 38 == made.json()["report"]["rows_written"]
    names = [c["name"] for c in new["columns"]]
    assert set(DESCRIPTORS) <= set(names) and "x_Al" in names and "FORMULA" in names
    kept = client.post(f"/api/datasets/{ds['id']}/featurise", json={"on_error": "keep"}).json()
    assert kept["dataset"]["n_rows"] == 1545

    bad = client.post(f"/api/datasets/{ds['id']}/featurise", json={"formula_column": "nope"})
    assert bad.status_code == 422 and "not in the dataset" in bad.json()["detail"]
    again = client.post(f"/api/datasets/{new['id']}/featurise", json={})
    assert again.status_code == 422 and "already exist" in again.json()["detail"]


@pytest.mark.slow
def test_leaderboard_trains_every_model_on_the_same_folds(client, mpea_csv):
    ds = upload(client, mpea_csv, "MPEA_dataset.csv")
    feat = client.post(f"/api/datasets/{ds['id']}/featurise", json={"on_error": "drop"}).json()
    dataset_id = feat["dataset"]["id"]
    body = {
        "target_columns": ["PROPERTY: HV"],
        "feature_columns": DESCRIPTORS,
        "split": {"n_splits": 3, "group_by": "composition", "seed": 4},
        "models": [
            {"name": "KAN", "kind": "kan", "params": {"hidden": [2], "grid": 3, "steps": 30}},
            {"name": "MLP", "kind": "mlp", "params": {"hidden": [8], "steps": 30}},
            {"name": "Ridge", "kind": "linear"},
            {"name": "RF", "kind": "random_forest", "params": {"n_estimators": 30}},
        ],
    }
    created = client.post(f"/api/datasets/{dataset_id}/leaderboards", json=body)
    assert created.status_code == 201, created.text
    board_id = created.json()["id"]
    run_ids = [r["id"] for r in created.json()["runs"]]
    assert [r["model"] for r in created.json()["runs"]] == ["kan", "mlp", "linear", "random_forest"]
    for run_id in run_ids:
        run = wait_for(client, run_id, timeout=300)
        assert run["status"] == "succeeded", run["error"]
    # every fold's training curve reaches the run's metrics, steps numbered across folds
    points = client.get(f"/api/runs/{run_ids[0]}/metrics").json()["points"]
    steps = [p["step"] for p in points]
    assert len(steps) > 3 * 5 and steps == sorted(set(steps))
    assert sum(p["val_loss"] is not None for p in points) > 3 * 5  # inner validation split

    board = client.get(f"/api/datasets/{dataset_id}/leaderboards/{board_id}").json()
    assert board["complete"] and board["split"]["n_splits"] == 3
    rows = board["rows"]
    assert {r["name"] for r in rows} == {"KAN", "MLP", "Ridge", "RF"}
    scores = [r["score_mean"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    for r in rows:
        assert r["score_name"] == "r2" and r["n_folds"] == 3
        assert r["second_name"] == "mae" and r["second_mean"] > 0
        assert r["n_parameters"] > 0 and r["train_time_s_mean"] > 0
    rf = next(r for r in rows if r["name"] == "RF")
    assert rf["score_mean"] > 0.3  # hardness is learnable from the descriptors

    # the same out-of-fold rows for every model, and the folds never share an alloy
    series = {p["name"]: p for p in board["predictions"]}
    assert len(series) == 4
    row_sets = {name: sorted(p["rows"]) for name, p in series.items()}
    assert len({tuple(v) for v in row_sets.values()}) == 1
    dropped = [e["row"] for e in feat["report"]["errors"]]
    raw = pd.read_csv(io.BytesIO(mpea_csv)).drop(index=dropped).reset_index(drop=True)
    formulas = raw["FORMULA"].to_numpy()[series["KAN"]["rows"]].tolist()
    fold_sizes = [f["n_test"] for f in rows[0]["folds"]]
    assert sum(fold_sizes) == len(formulas)
    starts = np.cumsum([0, *fold_sizes])
    fold_formulas = [set(formulas[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not fold_formulas[i] & fold_formulas[j]

    listed = client.get(f"/api/datasets/{dataset_id}/leaderboards").json()
    assert listed[0]["id"] == board_id and len(listed[0]["runs"]) == 4
    missing = client.get(f"/api/datasets/{dataset_id}/leaderboards/0123456789ab")
    assert missing.status_code == 404


def test_leaderboard_input_errors(client, demo_csv):
    ds = upload(client, demo_csv, "gorsse.csv")
    url = f"/api/datasets/{ds['id']}/leaderboards"
    too_many_folds = client.post(
        url, json={"target_columns": ["HV"], "split": {"n_splits": 20, "group_by": "Phases"}}
    )
    assert too_many_folds.status_code == 422
    assert "distinct groups" in too_many_folds.json()["detail"]
    unknown = client.post(
        url, json={"target_columns": ["HV"], "models": [{"name": "x", "kind": "xgboost"}]}
    )
    assert unknown.status_code == 422 and "Available" in unknown.json()["detail"]
    no_column = client.post(url, json={"target_columns": ["HV"], "split": {"group_by": "lab"}})
    assert no_column.status_code == 422 and "no such column" in no_column.json()["detail"]
    for model, message in [
        ({"name": "k", "kind": "kan", "params": {"hidden": "abc"}}, "Model 'k': hidden"),
        ({"name": "k", "kind": "kan", "params": {"steps": 10**9}}, "steps"),
        ({"name": "r", "kind": "linear", "params": {"alpha": "x"}}, "alpha must be a number"),
        ({"name": "f", "kind": "random_forest", "params": {"n_estimators": 10**9}}, "2000"),
    ]:
        r = client.post(url, json={"target_columns": ["HV"], "models": [model]})
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    both = {"target_columns": ["HV"], "models": [{"name": "r", "kind": "linear"}]}
    r = client.post(url, json=both | {"network_steps": 5})
    assert r.status_code == 422 and "network_steps" in r.json()["detail"]
    assert client.get(f"/api/runs?dataset_id={ds['id']}").json()["runs"] == []


def test_default_line_up_comes_from_the_api_with_the_networks_step_limit(client, demo_csv):
    """The dashboard sends no models, only ``network_steps``: the benchmarked defaults hold."""
    from app.services.leaderboard import DEFAULT_KAN_PARAMS

    ds = upload(client, demo_csv, "gorsse.csv")
    body = {"target_columns": ["HV"], "split": {"n_splits": 2, "group_by": None}}
    created = client.post(
        f"/api/datasets/{ds['id']}/leaderboards", json=body | {"network_steps": 3}
    )
    assert created.status_code == 201, created.text
    runs = created.json()["runs"]
    for run in runs:
        client.post(f"/api/runs/{run['id']}/cancel")
    assert [r["model"] for r in runs] == [
        "kan",
        "mlp",
        "linear",
        "random_forest",
        "gradient_boosting",
    ]
    kan, mlp = runs[0]["config"], runs[1]["config"]
    assert {k: kan[k] for k in DEFAULT_KAN_PARAMS} == DEFAULT_KAN_PARAMS
    assert kan["lamb"] == 1e-3 and kan["grid_eps"] == 0.02 and kan["steps"] == mlp["steps"] == 3


@pytest.mark.slow
def test_classification_leaderboard_with_stratified_folds(client, demo_csv):
    ds = upload(client, demo_csv, "gorsse.csv")
    body = {
        "target_columns": ["Phases"],
        "task": "classification",
        "feature_columns": ["VEC", "Delta", "Enthalpy of Mixing", "Electronegativity"],
        "split": {"n_splits": 3, "group_by": "composition", "stratify": True},
        "models": [
            {"name": "KAN", "kind": "kan", "params": {"hidden": [2], "steps": 20}},
            {"name": "Logistic", "kind": "linear"},
        ],
    }
    created = client.post(f"/api/datasets/{ds['id']}/leaderboards", json=body)
    assert created.status_code == 201, created.text
    for run in created.json()["runs"]:
        assert wait_for(client, run["id"], timeout=300)["status"] == "succeeded"
    board = client.get(f"/api/datasets/{ds['id']}/leaderboards/{created.json()['id']}").json()
    assert board["task"] == "classification" and board["split"]["stratify"]
    for row in board["rows"]:
        assert row["score_name"] == "accuracy" and 0.0 < row["score_mean"] <= 1.0
        assert row["second_name"] == "f1_macro"
    labels = {"BCC", "FCC", "FCC + BCC"}
    for series in board["predictions"]:
        assert labels <= set(series["y_true"])
        assert len(series["y_pred"]) == len(series["rows"]) == 366
