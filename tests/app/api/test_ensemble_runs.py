"""KAN runs trained as ensembles (issue #25): options checked when the run is created (422,
nothing queued), members trained by a real local trainer, the interval in the predictions, the
predictions CSV and the run summary, edge bands and formula stability. One small ensemble run
(3 members, 15 steps) serves the module."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.app.api_helpers import local_sqlite_client, wait_for

GROUPS = 12


def _csv(n_rows: int = 72, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n_rows, 3))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * x[:, 2] + 0.05 * rng.standard_normal(n_rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["x1", "x2", "x3", "y", "alloy"])
    for k in range(n_rows):
        w.writerow([*np.round(x[k], 5), round(float(y[k]), 5), f"A{k % GROUPS}"])
    return buf.getvalue().encode()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with local_sqlite_client(tmp_path_factory.mktemp("ensembles")) as client:
        yield client


ENSEMBLE = {"ensemble_members": 3, "ensemble_bootstrap": "groups", "group_column": "alloy"}


def _body(dataset_id: int, **kw: Any) -> dict[str, Any]:
    body = {
        "dataset_id": dataset_id,
        "target_columns": ["y"],
        "feature_columns": ["x1", "x2", "x3"],
        "hidden": [2],
        "grid": 3,
        "steps": 15,
        "update_grid_every": 0,
    }
    return body | kw


@pytest.fixture(scope="module")
def runs(api: TestClient) -> dict[str, Any]:
    """An ensemble run and a plain one on the same data, trained at the same time."""
    resp = api.post("/api/datasets", files={"file": ("alloys.csv", _csv(), "text/csv")})
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    ens = api.post("/api/runs", json=_body(ds["id"], model_options=ENSEMBLE))
    plain = api.post("/api/runs", json=_body(ds["id"]))
    assert ens.status_code == 201 and plain.status_code == 201, (ens.text, plain.text)
    out = {"dataset": ds, "ensemble": wait_for(api, ens.json()["id"])}
    out["plain"] = wait_for(api, plain.json()["id"])
    for key in ("ensemble", "plain"):
        assert out[key]["status"] == "succeeded", out[key]["error"]
    return out


def test_summary_reports_the_calibrated_interval_on_validation_rows(runs):
    s = runs["ensemble"]["summary"]
    e = s["ensemble"]
    assert e["members"] == 3 and e["bootstrap"] == "groups" and e["level"] == 0.9
    assert e["main_model"] == "member 0 (seed 0)" and e["seeds"] == [0, 1, 2]
    assert e["calibrated"] and e["calibrated_on"] == "validation"
    val = e["validation"]
    assert val["n_rows"] == s["n_rows_val"] > 4
    assert 0.0 <= val["coverage"] <= 1.0 and 0.0 <= val["coverage_members_only"] <= 1.0
    assert val["mean_width"][0] > 0 and e["noise_std"][0] >= 0
    assert s["width"] == [3, 2, 1] and s["val_metric"] is not None
    assert "ensemble" not in runs["plain"]["summary"]


def test_predictions_carry_the_interval_around_the_members_mean(api, runs):
    run_id = runs["ensemble"]["id"]
    for split in ("validation", "train"):
        p = api.get(f"/api/runs/{run_id}/predictions", params={"split": split}).json()
        assert p["level"] == 0.9 and len(p["lower"]) == len(p["rows"]) == len(p["y_pred"])
        lower, mean, upper = (np.array(p[k], dtype=float) for k in ("lower", "y_mean", "upper"))
        assert (lower < mean).all() and (mean < upper).all()
    # the validation coverage in the summary is measured on these rows' truth
    width = float(np.mean(upper - lower))
    assert width > 0
    plain = api.get(f"/api/runs/{runs['plain']['id']}/predictions").json()
    assert plain["level"] is None and plain["lower"] is None


def test_predictions_csv_has_interval_columns(api, runs):
    run_id = runs["ensemble"]["id"]
    resp = api.get(f"/api/runs/{run_id}/export/predictions")
    assert resp.status_code == 200
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert {"y_ensemble_mean", "y_lower", "y_upper", "interval_level"} <= set(rows[0])
    val = api.get(f"/api/runs/{run_id}/predictions").json()
    by_row = {r["row"]: r for r in rows if r["split"] == "validation"}
    for k, row in enumerate(val["rows"]):
        assert float(by_row[str(row)]["y_lower"]) == pytest.approx(val["lower"][k][0], rel=1e-6)
        assert float(by_row[str(row)]["interval_level"]) == 0.9
    plain = api.get(f"/api/runs/{runs['plain']['id']}/export/predictions").text
    assert "y_lower" not in plain.splitlines()[0]


def test_edge_band_spreads_across_members(api, runs):
    edge = api.get(f"/api/runs/{runs['ensemble']['id']}/edges/0/0/1").json()
    band = edge["band"]
    assert band["members"] == 3 and len(band["x"]) == len(band["lower"]) == 100
    lower, upper = np.array(band["lower"]), np.array(band["upper"])
    assert (lower <= upper).all() and (upper - lower).max() > 0  # members differ
    assert api.get(f"/api/runs/{runs['plain']['id']}/edges/0/0/1").json()["band"] is None


def test_formula_stability_counts_agreeing_members(api, runs):
    resp = api.get(f"/api/runs/{runs['ensemble']['id']}/ensemble/stability")
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["members"] == 3 and len(out["edges"]) == 3 * 2 + 2 * 1
    for e in out["edges"]:
        assert 1 <= e["agree"] <= 3 and len(e["best"]) == 3
        assert e["best"].count(e["top"]) == e["agree"]
    refused = api.get(f"/api/runs/{runs['plain']['id']}/ensemble/stability")
    assert refused.status_code == 409 and "ensemble_members" in refused.json()["detail"]


BAD_OPTIONS = [
    ({"ensemble_members": 1}, "2..32"),
    ({"ensemble_members": 33}, "2..32"),
    ({"ensemble_members": "8"}, "integer"),
    ({"ensemble_members": 4, "ensemble_bootstrap": "groups"}, "group_column"),
    ({"ensemble_members": 4, "ensemble_bootstrap": "folds"}, "'none', 'rows', 'groups'"),
    ({"ensemble_members": 4, "ensemble_level": 1.5}, "ensemble_level"),
    ({"ensemble_bootstrap": "rows"}, "set ensemble_members"),
    ({"ensemble_members": 4, "group_column": "alloy"}, "only with ensemble_bootstrap"),
    ({**ENSEMBLE, "group_column": "phase"}, "not in the dataset"),
    ({**ENSEMBLE, "group_column": "y"}, "is a target"),
    ({"ensemble_members": 4, "members": 4}, "takes only the ensemble's"),
]


@pytest.mark.parametrize(("options", "words"), BAD_OPTIONS)
def test_bad_ensemble_options_are_refused_and_nothing_is_queued(api, runs, options, words):
    before = len(api.get("/api/runs").json()["runs"])
    resp = api.post("/api/runs", json=_body(runs["dataset"]["id"], model_options=options))
    assert resp.status_code == 422, resp.text
    assert words in resp.json()["detail"]
    assert len(api.get("/api/runs").json()["runs"]) == before


def test_ensembles_are_for_kan_regression_only(api, runs):
    ds = runs["dataset"]["id"]
    mlp = api.post("/api/runs", json=_body(ds, model="mlp", model_options={"ensemble_members": 3}))
    assert mlp.status_code == 422 and "takes no model_options" in mlp.json()["detail"]
    cls = api.post(
        "/api/runs",
        json=_body(ds, target_columns=["alloy"], task="classification",
                   model_options={"ensemble_members": 3}),
    )  # fmt: skip
    assert cls.status_code == 422 and "regression runs only" in cls.json()["detail"]


def test_after_an_edit_the_interval_says_it_is_the_trained_models(api, runs):
    """A symbolic fix changes the run's model, not the members: the interval, the band and the
    CSV say they describe the model as trained; a retrain trains the edited model alone (a
    single KAN, no interval) and says so; resetting the edits makes the interval current."""
    run_id = runs["ensemble"]["id"]
    before = api.get(f"/api/runs/{run_id}/predictions").json()
    assert before["interval_current"] is True and before["interval_note"] is None
    fixed = api.post(f"/api/runs/{run_id}/edges/0/0/1/fix", json={"name": "x"})
    assert fixed.status_code == 200, fixed.text
    try:
        after = api.get(f"/api/runs/{run_id}/predictions").json()
        assert after["interval_current"] is False
        assert (
            "edited" in after["interval_note"] and "3 members as trained" in after["interval_note"]
        )
        assert after["lower"] == before["lower"]  # still the trained members' interval
        assert after["y_pred"] != before["y_pred"]  # of a model that has changed
        band = api.get(f"/api/runs/{run_id}/edges/0/0/1").json()["band"]
        assert "before the edits" in band["note"]
        rows = list(
            csv.DictReader(io.StringIO(api.get(f"/api/runs/{run_id}/export/predictions").text))
        )
        assert {r["interval_of"] for r in rows} == {"trained model (before edits)"}

        resp = api.post(f"/api/runs/{run_id}/retrain", json={"steps": 5})
        assert resp.status_code == 201, resp.text
        child = resp.json()
        options = child["config"].get("model_options") or {}
        assert "ensemble_members" not in options and "group_column" not in options
        assert child["config"]["from_ensemble"] == {"run_id": run_id, "members": 3}
        child = wait_for(api, child["id"])
        assert child["status"] == "succeeded", child["error"]
        assert "ensemble" not in child["summary"]
        (note,) = child["summary"]["notes"]
        assert f"run {run_id}'s model alone" in note and "no prediction interval" in note
        preds = api.get(f"/api/runs/{child['id']}/predictions").json()
        assert preds["lower"] is None and preds["interval_current"] is None
        assert api.get(f"/api/runs/{child['id']}/ensemble/stability").status_code == 409
    finally:
        assert api.post(f"/api/runs/{run_id}/reset-edits").status_code == 204
    again = api.get(f"/api/runs/{run_id}/predictions").json()
    assert again["interval_current"] is True and again["y_pred"] == before["y_pred"]
