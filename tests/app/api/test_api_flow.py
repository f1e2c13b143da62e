"""The whole path through the API on SQLite and PostgreSQL: upload → train a KAN and an MLP
(real training processes) → metrics → curves → auto-symbolic → formula → exports → retrain."""

from __future__ import annotations

import ast
import csv
import io

import pytest

from tests.app.api_helpers import upload, wait_for

FEATURES = ["Al", "Co", "Cr", "Fe", "Ni"]


def run_body(dataset_id: int, **kw: object) -> dict[str, object]:
    body: dict[str, object] = {
        "dataset_id": dataset_id,
        "target_columns": ["HV"],
        "feature_columns": FEATURES,
        "hidden": [2],
        "grid": 3,
        "steps": 25,
        "update_grid_every": 0,
    }
    body.update(kw)
    return body


@pytest.mark.slow
def test_upload_train_inspect_symbolic_export(client, demo_csv):
    ds = upload(client, demo_csv, "gorsse.csv")
    assert ds["n_rows"] == 366 and ds["n_columns"] == 36
    cols = {c["name"]: c for c in ds["columns"]}
    assert cols["HV"]["kind"] == "numeric" and cols["Phases"]["kind"] == "categorical"

    kan = client.post("/api/runs", json=run_body(ds["id"], name="kan"))
    mlp = client.post("/api/runs", json=run_body(ds["id"], model="mlp", hidden=[8]))
    assert kan.status_code == 201 and mlp.status_code == 201, (kan.text, mlp.text)
    assert kan.json()["status"] == "queued"
    kan_run = wait_for(client, kan.json()["id"])
    mlp_run = wait_for(client, mlp.json()["id"])
    for run in (kan_run, mlp_run):
        assert run["status"] == "succeeded", run["error"]
        assert run["has_model"] and run["finished_at"] and run["started_at"]
        s = run["summary"]
        assert s["n_rows_used"] + s["n_rows_dropped"] == 366
        assert s["n_rows_dropped"] > 0  # the demo has rows with missing values
        assert s["n_parameters"] > 0 and s["metric_name"] == "r2"
    assert kan_run["summary"]["width"] == [5, 2, 1]
    # early stopping is the API's default where there are validation rows: the kept model is
    # the best step's, and the last step's scores are reported next to it
    assert kan_run["config"]["early_stopping_patience"] == 100
    assert mlp_run["config"]["early_stopping_patience"] == 100
    s = kan_run["summary"]
    assert s["final_step"] == 25 and 1 <= s["best_step"] <= 25
    assert s["final_val_loss"] >= s["val_loss"] - 1e-6  # the best is never worse than the last
    assert not kan_run["edited"] and kan_run["queue_position"] is None
    # the small KAN trained through kan_core's fused CPU engine, the MLP through PyTorch
    assert kan_run["summary"]["engine"] == "fused-cpu"
    assert mlp_run["summary"]["engine"] == "torch"

    # metrics: all steps, then incrementally
    m = client.get(f"/api/runs/{kan_run['id']}/metrics").json()
    assert [p["step"] for p in m["points"]] == list(range(1, 26))  # steps completed
    assert m["last_step"] == 25 and m["metric_name"] == "r2"
    newer = client.get(f"/api/runs/{kan_run['id']}/metrics", params={"after_step": 21}).json()
    assert [p["step"] for p in newer["points"]] == [22, 23, 24, 25]
    none_left = client.get(f"/api/runs/{kan_run['id']}/metrics", params={"after_step": 25})
    assert none_left.json()["points"] == [] and none_left.json()["last_step"] == 25

    # network structure (documented shape) and one edge in detail
    net = client.get(f"/api/runs/{kan_run['id']}/network").json()
    assert net["width"] == [5, 2, 1] and net["input_names"] == FEATURES
    assert net["output_names"] == ["HV"]
    assert [len(layer["edges"]) for layer in net["layers"]] == [10, 2]
    edge = net["layers"][0]["edges"][0]
    assert set(edge) >= {"i", "j", "score", "symbolic", "x", "y"} and len(edge["x"]) == 32
    assert [len(n) for n in net["node_scores"]] == [5, 2, 1]
    detail = client.get(f"/api/runs/{kan_run['id']}/edges/0/1/0").json()
    assert detail["input_name"] == "Co" and len(detail["data_x"]) == len(detail["data_y"]) > 10
    assert client.get(f"/api/runs/{kan_run['id']}/edges/0/9/0").status_code == 404
    assert client.get(f"/api/runs/{mlp_run['id']}/network").status_code == 409

    # predictions in original units
    pred = client.get(f"/api/runs/{kan_run['id']}/predictions").json()
    assert len(pred["rows"]) == len(pred["y_true"]) == kan_run["summary"]["n_rows_val"]
    assert 50 < pred["y_true"][0][0] < 1500  # Vickers hardness, not standardised units
    assert abs(pred["metric"] - kan_run["summary"]["val_metric"]) < 1e-3

    # symbolic: suggestions, fix one edge, formula needs all edges, auto-symbolic, formula
    sug = client.get(f"/api/runs/{kan_run['id']}/edges/0/0/0/suggestions").json()
    assert sug["suggestions"] and sug["suggestions"][0]["name"]
    fixed = client.post(f"/api/runs/{kan_run['id']}/edges/0/0/0/fix", json={"name": "x"})
    assert fixed.status_code == 200 and fixed.json()["symbolic"] == "x"
    # the run is marked edited (the dashboard's badge), in its detail and in the list
    assert client.get(f"/api/runs/{kan_run['id']}").json()["edited"]
    listed = {r["id"]: r["edited"] for r in client.get("/api/runs").json()["runs"]}
    assert listed == {kan_run["id"]: True, mlp_run["id"]: False}
    bad = client.post(f"/api/runs/{kan_run['id']}/edges/0/0/0/fix", json={"name": "import os"})
    assert bad.status_code == 422 and "Available functions" in bad.json()["detail"]
    # with numeric edges left: a partial formula (placeholders φ) that says which edges remain
    partial = client.get(f"/api/runs/{kan_run['id']}/formula")
    assert partial.status_code == 200, partial.text
    body = partial.json()
    assert not body["complete"] and len(body["numeric_edges"]) == 11
    assert {"layer": 0, "i": 0, "j": 0} not in body["numeric_edges"]
    assert body["note"].startswith("11 edges are still splines: (0, 0→1), (0, 1→0)")
    assert "auto-symbolic" in body["note"]
    out = body["outputs"][0]
    assert out["partial"] and out["r2"] is None and out["network_r2"] is not None
    assert out["val_r2"] is None  # a partial formula is not scored, held out or not
    assert out["latex"].startswith(r"\mathrm{HV} =") and r"\varphi_{1,0,0}\left(" in out["latex"]
    refused = client.get(f"/api/runs/{kan_run['id']}/export/python")
    assert refused.status_code == 422 and "numeric" in refused.json()["detail"]
    simple = ["x", "x^2"]  # keeps the sympy simplification in kan_core quick
    auto = client.post(
        f"/api/runs/{kan_run['id']}/auto-symbolic", json={"r2_threshold": 0.0, "library": simple}
    )
    assert auto.status_code == 200, auto.text
    assert auto.json()["n_fixed"] == 11  # 12 edges, one fixed by hand already
    formula = client.get(f"/api/runs/{kan_run['id']}/formula").json()
    assert "complete" in formula, formula
    assert formula["complete"] and formula["n_symbolic_edges"] == 12
    assert formula["numeric_edges"] == [] and formula["note"] is None
    out = formula["outputs"][0]
    assert out["name"] == "HV" and out["latex"].startswith(r"\mathrm{HV} =")
    assert out["r2"] is None or out["r2"] <= 1.0
    assert out["val_r2"] is not None and out["val_r2"] <= 1.0  # on the 20 % validation rows
    net2 = client.get(f"/api/runs/{kan_run['id']}/network").json()
    assert all(e["symbolic"] for layer in net2["layers"] for e in layer["edges"])

    # exports
    for kind, ctype in [
        ("latex", "text/x-tex"),
        ("python", "text/x-python"),
        ("sympy", "text/plain"),
        ("model", "application/octet-stream"),
        ("predictions", "text/csv"),
    ]:
        r = client.get(f"/api/runs/{kan_run['id']}/export/{kind}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype), kind
        assert "attachment" in r.headers["content-disposition"]
        if kind == "python":
            tree = ast.parse(r.text)
            assert any(isinstance(n, ast.FunctionDef) and n.name == "predict" for n in tree.body)
        if kind == "model":
            from kan_core.io import model_from_bytes

            model, meta = model_from_bytes(r.content)
            assert meta["feature_names"] == FEATURES and model.width == [5, 2, 1]
        if kind == "predictions":
            rows = list(csv.reader(io.StringIO(r.text)))
            assert rows[0] == ["row", "split", "HV_true", "HV_pred"]
            assert len(rows) - 1 == kan_run["summary"]["n_rows_used"]
    assert client.get(f"/api/runs/{mlp_run['id']}/export/model").status_code == 200
    assert client.get(f"/api/runs/{mlp_run['id']}/export/latex").status_code == 409

    # retrain: a child run starting from the symbolic model, history kept
    child = client.post(f"/api/runs/{kan_run['id']}/retrain", json={"steps": 5})
    assert child.status_code == 201, child.text
    child_run = wait_for(client, child.json()["id"])
    assert child_run["status"] == "succeeded", child_run["error"]
    assert child_run["parent_run_id"] == kan_run["id"] and child_run["config"]["steps"] == 5
    child_net = client.get(f"/api/runs/{child_run['id']}/network").json()
    assert all(e["symbolic"] for layer in child_net["layers"] for e in layer["edges"])
    # the parent's trained model is still there: resetting its edits brings the splines back
    assert client.post(f"/api/runs/{kan_run['id']}/reset-edits").status_code == 204
    reset = client.get(f"/api/runs/{kan_run['id']}/network").json()
    assert not client.get(f"/api/runs/{kan_run['id']}").json()["edited"]
    assert not any(e["symbolic"] for layer in reset["layers"] for e in layer["edges"])


def test_classification_run(client, demo_csv):
    ds = upload(client, demo_csv)
    r = client.post(
        "/api/runs",
        json=run_body(ds["id"], target_columns=["Phases"], task="classification", steps=10),
    )
    assert r.status_code == 201, r.text
    run = wait_for(client, r.json()["id"])
    assert run["status"] == "succeeded", run["error"]
    assert run["summary"]["metric_name"] == "accuracy" and len(run["summary"]["classes"]) == 15
    pred = client.get(f"/api/runs/{run['id']}/predictions").json()
    assert pred["metric_name"] == "accuracy" and isinstance(pred["y_pred"][0], str)
    assert 0.0 <= pred["metric"] <= 1.0
