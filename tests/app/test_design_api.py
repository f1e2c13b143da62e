"""Inverse design through the API (SQLite, real training processes): a design run for a trained
KAN on alloy data → ranked candidates that keep every constraint, with descriptors and distances
that agree with an independent computation, and their CSV; infeasible constraints → 422 naming
the constraint (nothing queued); runs and datasets a design cannot use → 409 with the reason."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from api_helpers import upload, wait_for

from app.services.alloys import descriptors_for

DEMO = Path(__file__).resolve().parents[2] / "app" / "demo_data"
ELEMENTS = ["Al", "Co", "Cr", "Fe", "Ni"]
FEATURES = ["x_Al", "x_Co", "x_Cr", "x_Fe", "x_Ni", "vec", "delta_pct", "proc_CAST"]
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def alloy_table() -> pd.DataFrame:
    """The first 160 rows of the shipped MPEA hardness set (formula, x_El, descriptors, HV)."""
    return pd.read_csv(DEMO / "mpea_hardness.csv").head(160)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _kan(client: Any, dataset_id: int, features: list[str], target: str) -> dict[str, Any]:
    body = {
        "dataset_id": dataset_id,
        "target_columns": [target],
        "feature_columns": features,
        "hidden": [2],
        "grid": 3,
        "steps": 15,
        "update_grid_every": 0,
        "seed": 1,
        "val_fraction": 0.2,
    }
    run = wait_for(client, client.post("/api/runs", json=body).json()["id"])
    assert run["status"] == "succeeded", run["error"]
    return run


def test_design_run_proposes_constrained_candidates(client, alloy_table) -> None:
    ds = upload(client, _csv(alloy_table), "mpea_head.csv")
    kan = _kan(client, ds["id"], FEATURES, "HV")
    request = {
        "elements": ELEMENTS,
        "bounds": {"Al": [0.0, 0.2], "Ni": [0.1, 0.5]},
        "min_elements": 4,
        "direction": "max",
        "budget": 120,
        "n_candidates": 5,
        "seed": 2,
    }
    started = client.post(f"/api/runs/{kan['id']}/design", json=request)
    assert started.status_code == 201, started.text
    run = wait_for(client, started.json()["id"])
    assert run["status"] == "succeeded", run["error"]
    assert run["model"] == "design" and run["parent_run_id"] == kan["id"]
    view = client.get(f"/api/runs/{run['id']}/design").json()
    assert view["status"] == "succeeded" and view["progress"]["fraction"] == 1.0
    result = view["result"]
    assert result["n_evaluations"] == 120 and result["method"] == "de"
    assert result["fixed_inputs"] == {"proc_CAST": 1.0}  # most training rows are cast
    cands = result["candidates"]
    assert 1 <= len(cands) <= 5
    predicted = [c["predicted"] for c in cands]
    assert predicted == sorted(predicted, reverse=True)

    # the training compositions the distances are measured to (the run's training rows)
    train_rows = client.get(f"/api/runs/{kan['id']}/predictions?split=train").json()["rows"]
    x_cols = [c for c in alloy_table.columns if c.startswith("x_")]
    train = alloy_table.iloc[train_rows][x_cols].to_numpy()
    for c in cands:
        x = c["composition"]
        assert math.isclose(sum(x.values()), 1.0, abs_tol=1e-5)
        assert x["Al"] <= 0.2 + 1e-6 and 0.1 - 1e-6 <= x["Ni"] <= 0.5 + 1e-6
        assert sum(v >= 0.05 - 1e-9 for v in x.values()) >= 4
        expected = descriptors_for({el: v for el, v in x.items() if v > 0})
        for name in ("vec", "delta_pct", "omega"):
            assert math.isclose(c["descriptors"][name], expected[name], rel_tol=1e-4), name
        full = np.array([x.get(col[2:], 0.0) for col in x_cols])
        nearest = (0.5 * np.abs(train - full).sum(axis=1)).min()
        assert c["nearest_distance"] == pytest.approx(nearest, abs=1e-4)
    training = result["training"]
    assert len(training["value"]) == len(train_rows) == len(training["distance"])

    exported = client.get(f"/api/runs/{run['id']}/design/candidates.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0][:7] == ["rank", "formula", "x_Al", "x_Co", "x_Cr", "x_Fe", "x_Ni"]
    assert "HV_predicted" in rows[0] and "nearest_distance" in rows[0] and "omega" in rows[0]
    assert len(rows) == len(cands) + 1
    assert float(rows[1][rows[0].index("HV_predicted")]) == pytest.approx(predicted[0])

    # not a design run; a run kind a design cannot use; design runs only through the shortcut
    assert client.get(f"/api/runs/{kan['id']}/design").status_code == 404
    direct = client.post(
        "/api/runs",
        json={"dataset_id": ds["id"], "target_columns": ["HV"], "model": "design"},
    )
    assert direct.status_code == 422 and "/design" in direct.json()["detail"]

    # infeasible constraints: 422 naming the constraint, nothing queued
    n_runs = len(client.get("/api/runs").json())
    bad = {
        "bounds": {"elements": ["Al", "Co"], "bounds": {"Al": [0.6, 1.0], "Co": [0.6, 1.0]}},
        "elements": {"elements": ["Al", "Xx"]},
        "min_elements": {"elements": ["Al", "Co"], "min_elements": 3},
    }
    for constraint, body in bad.items():
        r = client.post(f"/api/runs/{kan['id']}/design", json=body | {"budget": 20})
        assert r.status_code == 422, (constraint, r.text)
        assert r.json()["detail"].startswith(constraint), r.json()
    upper = client.post(
        f"/api/runs/{kan['id']}/design",
        json={"elements": ["Al", "Co"], "bounds": {"Al": [0, 0.3], "Co": [0, 0.3]}},
    )
    assert upper.status_code == 422 and "upper bounds sum to 0.6" in upper.json()["detail"]
    fixed = client.post(
        f"/api/runs/{kan['id']}/design",
        json={"elements": ELEMENTS, "fixed_features": {"vec": 8.0}},
    )
    assert fixed.status_code == 422 and "vec" in fixed.json()["detail"]
    assert len(client.get("/api/runs").json()) == n_runs


def test_design_refuses_runs_and_datasets_it_cannot_use(client, alloy_table) -> None:
    # a dataset with numbers only: no composition column
    rng = np.random.default_rng(0)
    plain = pd.DataFrame({"a": rng.uniform(0, 1, 60), "b": rng.uniform(0, 1, 60)})
    plain["y"] = plain["a"] * 2 + plain["b"]
    ds = upload(client, _csv(plain), "plain.csv")
    kan = _kan(client, ds["id"], ["a", "b"], "y")
    r = client.post(f"/api/runs/{kan['id']}/design", json={"elements": ["Al", "Co"]})
    assert r.status_code == 409 and "no composition" in r.json()["detail"], r.text

    # a scikit-learn baseline keeps no model to evaluate on new compositions
    alloys = upload(client, _csv(alloy_table), "mpea_head.csv")
    body = {"dataset_id": alloys["id"], "target_columns": ["HV"], "feature_columns": FEATURES}
    linear = wait_for(
        client, client.post("/api/runs", json=body | {"model": "linear"}).json()["id"]
    )
    r = client.post(f"/api/runs/{linear['id']}/design", json={"elements": ["Al", "Co"]})
    assert r.status_code == 409 and "'linear' run" in r.json()["detail"], r.text
    assert client.post("/api/runs/999999/design", json={"elements": ["Al"]}).status_code == 404
