"""Predictions for rows a run has never seen (``POST /runs/{id}/predict``): the same numbers the
run gives its own validation rows, the ensemble's interval, labels and probabilities for a
classifier, a note per row for missing features and extrapolation, other columns kept (quoted
where a spreadsheet would run them), and a 4xx that says what to fix for every bad upload.
Three small runs trained by a real local trainer serve the module."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.app.api_helpers import local_sqlite_client, wait_for

FEATURES = ["x1", "x2", "x3"]


def dataset_csv(n_rows: int = 72, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n_rows, 3))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * x[:, 2] + 0.05 * rng.standard_normal(n_rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*FEATURES, "y", "kind", "alloy"])
    for k in range(n_rows):
        kind = "hard" if y[k] > 0.4 else "soft"
        w.writerow([*np.round(x[k], 5), round(float(y[k]), 5), kind, f"A{k % 12}"])
    return buf.getvalue().encode()


def rows_csv(rows: list[list[Any]], header: list[str] | None = None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header or ["sample", *FEATURES])
    w.writerows(rows)
    return buf.getvalue().encode()


def read_csv(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with local_sqlite_client(tmp_path_factory.mktemp("predict")) as client:
        yield client


@pytest.fixture(scope="module")
def runs(api: TestClient) -> dict[str, Any]:
    """A KAN, a 2-member KAN ensemble and a KAN classifier, trained at the same time."""
    resp = api.post("/api/datasets", files={"file": ("alloys.csv", dataset_csv(), "text/csv")})
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    base = {"dataset_id": ds["id"], "feature_columns": FEATURES, "hidden": [2], "grid": 3,
            "steps": 15, "target_columns": ["y"]}  # fmt: skip
    ensemble = {"ensemble_members": 2, "ensemble_bootstrap": "groups", "group_column": "alloy"}
    bodies = {
        "plain": base,
        "ensemble": base | {"model_options": ensemble},
        "classifier": base | {"target_columns": ["kind"], "task": "classification"},
    }
    started = {}
    for key, body in bodies.items():
        r = api.post("/api/runs", json=body)
        assert r.status_code == 201, r.text
        started[key] = r.json()["id"]
    out: dict[str, Any] = {"dataset": ds}
    for key, run_id in started.items():
        out[key] = wait_for(api, run_id)
        assert out[key]["status"] == "succeeded", out[key]["error"]
    return out


def validation_rows(api: TestClient, run_id: int) -> tuple[list[list[float]], dict[str, Any]]:
    """The run's validation rows' features (from the dataset) and its predictions for them."""
    p = api.get(f"/api/runs/{run_id}/predictions").json()
    table = list(csv.reader(io.StringIO(dataset_csv().decode())))[1:]
    return [[float(v) for v in table[r][:3]] for r in p["rows"]], p


def predict(api: TestClient, run_id: int, content: bytes) -> Any:
    return api.post(f"/api/runs/{run_id}/predict", files={"file": ("new.csv", content, "text/csv")})


def predict_validation_rows(api: TestClient, run_id: int) -> tuple[list[dict], dict[str, Any]]:
    """The run's validation rows sent as new rows: the answer's rows, and the run's own
    predictions for them."""
    features, p = validation_rows(api, run_id)
    resp = predict(api, run_id, rows_csv([[k, *f] for k, f in enumerate(features)]))
    assert resp.status_code == 200, resp.text
    return read_csv(resp.content), p


def test_new_rows_get_the_numbers_the_run_gives_its_own_rows(api, runs) -> None:
    run_id = runs["plain"]["id"]
    features, p = validation_rows(api, run_id)
    resp = predict(api, run_id, rows_csv([[f"s{k}", *f] for k, f in enumerate(features)]))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    out = read_csv(resp.content)
    assert list(out[0]) == ["sample", *FEATURES, "y_pred", "note"]
    assert [r["sample"] for r in out] == [f"s{k}" for k in range(len(features))]
    got = np.array([float(r["y_pred"]) for r in out])
    np.testing.assert_allclose(got, np.array(p["y_pred"])[:, 0], rtol=1e-4, atol=1e-4)


def test_missing_features_and_extrapolation_are_noted_row_by_row(api, runs) -> None:
    content = rows_csv(
        [
            ["inside", 0.1, 0.2, -0.3],
            ["no x2", 0.1, "", -0.3],
            ["far", 7.5, 0.2, -0.3],
            ['=HYPERLINK("http://evil")', 0.0, 0.0, 0.0],
        ]
    )
    resp = predict(api, runs["plain"]["id"], content)
    assert resp.status_code == 200, resp.text
    inside, no_x2, far, formula = read_csv(resp.content)
    assert inside["note"] == "" and np.isfinite(float(inside["y_pred"]))
    assert no_x2["y_pred"] == "" and no_x2["note"] == "no prediction: missing x2"
    assert far["y_pred"] != "" and far["note"] == "outside the training range: x1"
    assert formula["sample"].startswith("'=")  # a spreadsheet shows it, never runs it


def test_an_ensemble_adds_its_interval(api, runs) -> None:
    out, p = predict_validation_rows(api, runs["ensemble"]["id"])
    for part in ("y_ensemble_mean", "y_lower", "y_upper", "interval_level", "interval_of"):
        assert part in out[0], list(out[0])
    for row, lower, upper in zip(out, p["lower"], p["upper"], strict=True):
        assert float(row["y_lower"]) == pytest.approx(lower[0], abs=1e-4)
        assert float(row["y_upper"]) == pytest.approx(upper[0], abs=1e-4)
        assert row["interval_of"] == "current model"


def test_many_rows_are_predicted_in_batches_under_the_memory_cap(
    api, runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With KANSCOPE_MAX_RUN_MEMORY_MB at 97 this KAN predicts 3877 rows a batch (the
    estimate of app.services.memory): 5000 rows take two, and give what one batch gives."""
    from app.config import get_settings
    from app.services.memory import InspectionShape, basis_path, inspection_rows

    shape = InspectionShape([3, 2, 1], 6, basis_path("bspline", 3, False, cubic_engine="numba"))
    assert inspection_rows(shape, "predict", 5000, max_mb=97) < 5000
    rng = np.random.default_rng(1)
    content = rows_csv([[k, *np.round(rng.uniform(-1, 1, 3), 4)] for k in range(5000)])
    run_id = runs["ensemble"]["id"]
    whole = predict(api, run_id, content)
    monkeypatch.setenv("KANSCOPE_MAX_RUN_MEMORY_MB", "97")
    get_settings.cache_clear()
    try:
        batched = predict(api, run_id, content)
    finally:
        monkeypatch.delenv("KANSCOPE_MAX_RUN_MEMORY_MB")
        get_settings.cache_clear()
    assert whole.status_code == batched.status_code == 200, (whole.text, batched.text)
    a, b = read_csv(whole.content), read_csv(batched.content)
    assert len(a) == len(b) == 5000 and "y_upper" in a[0]
    for key in ("y_pred", "y_ensemble_mean", "y_lower", "y_upper"):
        np.testing.assert_allclose(
            [float(r[key]) for r in b], [float(r[key]) for r in a], rtol=1e-5, atol=1e-6
        )


def test_a_classifier_gives_a_label_and_its_probability(api, runs) -> None:
    out, p = predict_validation_rows(api, runs["classifier"]["id"])
    assert [r["kind_pred"] for r in out] == p["y_pred"]
    assert all(0.5 <= float(r["kind_probability"]) <= 1.0 for r in out)  # two classes


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (rows_csv([[1, 0.1, 0.2]], ["sample", "x1", "x2"]), 422, ["lacks", "x3"]),
        (rows_csv([[1, 0.1, "lots", 0.3]]), 422, ["'x2'", "numbers", "[1]", "lots"]),
        (b"", 422, ["empty"]),
        (b"sample,x1,x2,x3\n", 422, ["no data rows"]),
    ],
    ids=["missing column", "text in a feature", "empty file", "header only"],
)
def test_a_bad_upload_says_what_to_fix(api, runs, content, status, words) -> None:
    resp = predict(api, runs["plain"]["id"], content)
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    for word in words:
        assert word in detail, (word, detail)


def test_runs_that_cannot_predict_say_why(api, runs) -> None:
    assert predict(api, 999_999, rows_csv([[1, 0, 0, 0]])).status_code == 404
    body = {"dataset_id": runs["dataset"]["id"], "target_columns": ["y"],
            "feature_columns": FEATURES, "model": "random_forest"}  # fmt: skip
    baseline = wait_for(api, api.post("/api/runs", json=body).json()["id"])
    assert baseline["status"] == "succeeded", baseline
    resp = predict(api, baseline["id"], rows_csv([[1, 0, 0, 0]]))
    assert resp.status_code == 409, resp.text
    assert "no trained model to predict with" in resp.json()["detail"]
    # a second file part is refused before anything is read
    two = [("file", ("a.csv", b"x1\n1\n", "text/csv")), ("file", ("b.csv", b"x1\n1\n", "text/csv"))]
    assert api.post(f"/api/runs/{runs['plain']['id']}/predict", files=two).status_code == 422
