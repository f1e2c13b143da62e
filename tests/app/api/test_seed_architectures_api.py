"""S-KAN, AF-KAN and the RBF-subspace network through the API (issue #25, part 3): runs trained by
a real local trainer, the S-KAN's family per node and the RBF network's feature ranking in the
run summary, bad options refused (422, nothing queued), leaderboard folds of each."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.services.leaderboard import LeaderboardModel, train_fold
from tests.app.api_helpers import local_sqlite_client, wait_for


def _table(n_rows: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n_rows, 3))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.02 * rng.standard_normal(n_rows)  # x3: noise
    return x, y


def _csv() -> bytes:
    x, y = _table()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["x1", "x2", "x3", "y"])
    for k in range(len(y)):
        w.writerow([*np.round(x[k], 5), round(float(y[k]), 5)])
    return buf.getvalue().encode()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with local_sqlite_client(tmp_path_factory.mktemp("seed_arch")) as client:
        yield client


def _body(dataset_id: int, **kw: Any) -> dict[str, Any]:
    body = {
        "dataset_id": dataset_id,
        "target_columns": ["y"],
        "feature_columns": ["x1", "x2", "x3"],
        "hidden": [2],
        "grid": 4,
        "steps": 40,
        "lr": 0.02,
        "update_grid_every": 10,
    }
    return body | kw


@pytest.fixture(scope="module")
def runs(api: TestClient) -> dict[str, Any]:
    resp = api.post("/api/datasets", files={"file": ("seed.csv", _csv(), "text/csv")})
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    bodies = {
        "s_kan": _body(ds["id"], basis="s_kan"),
        "af_kan": _body(ds["id"], basis="af_kan"),
        "rbf": _body(
            ds["id"], model="rbf_subspace", model_options={"subspace_dim": 1, "centres": 8}
        ),
    }
    ids = {}
    for key, body in bodies.items():
        r = api.post("/api/runs", json=body)
        assert r.status_code == 201, r.text
        ids[key] = r.json()["id"]
    out = {"dataset": ds} | {key: wait_for(api, run_id) for key, run_id in ids.items()}
    for key in bodies:
        assert out[key]["status"] == "succeeded", out[key]["error"]
    return out


def test_s_kan_run_reports_a_family_per_node(runs):
    s = runs["s_kan"]["summary"]
    families = s["node_families"]
    assert [len(layer) for layer in families] == [3, 2]  # width [3, 2, 1]: inputs, hidden
    assert all(
        f in ("bspline", "rbf", "chebyshev", "rational") for layer in families for f in layer
    )
    assert s["engine"] == "torch" and s["final_step"] == 40
    assert "node_families" not in runs["af_kan"]["summary"]


def test_s_kan_run_inspects_like_a_kan(api, runs):
    edge = api.get(f"/api/runs/{runs['s_kan']['id']}/edges/0/0/0")
    assert edge.status_code == 200, edge.text
    assert len(edge.json()["x"]) == len(edge.json()["y"]) > 10


def test_af_kan_run_trains_on_the_torch_engine(runs):
    s = runs["af_kan"]["summary"]
    assert s["engine"] == "torch" and s["val_metric"] is not None


def test_rbf_subspace_run_ranks_the_features(runs):
    s = runs["rbf"]["summary"]
    ranking = s["feature_ranking"]
    assert ranking["features"] == ["x1", "x2", "x3"]
    assert sum(ranking["scores"]) == pytest.approx(1.0)
    assert len(ranking["eigenvalues"]) == 1 and "WᵀW" in ranking["method"]
    assert s["width"] == [3, 1] and s["n_parameters"] == 3 + 8 + 8 + 1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"centres": 1}, "centres must lie in 2..256"),
        ({"subspace_dim": 2.5}, "subspace_dim must be an integer"),
        ({"width": 3}, "Unknown model_options ['width']"),
    ],
)
def test_bad_rbf_options_are_a_422_naming_the_option(api, runs, options, message):
    before = len(api.get("/api/runs").json())
    r = api.post(
        "/api/runs",
        json=_body(runs["dataset"]["id"], model="rbf_subspace", model_options=options),
    )
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert len(api.get("/api/runs").json()) == before


@pytest.mark.parametrize(
    "spec",
    [
        LeaderboardModel("S-KAN", "kan", {"basis": "s_kan", "hidden": [2], "steps": 30}),
        LeaderboardModel("AF-KAN", "kan", {"basis": "af_kan", "hidden": [2], "steps": 30}),
        LeaderboardModel("RBF-subspace", "rbf_subspace", {"centres": 8, "steps": 60}),
    ],
)
def test_leaderboard_folds_train_the_new_kinds(spec):
    x, y = _table()
    groups = np.arange(len(y)) % 10
    test = groups < 2
    fold = train_fold(spec, "regression", x, y, groups, np.flatnonzero(~test), np.flatnonzero(test))
    assert fold.metrics["r2"] > 0.3, fold.metrics
    assert fold.info["steps_run"] <= spec.params["steps"]


def test_network_figure_tags_each_node_with_its_family():
    from app.dashboard import figures

    network = {
        "width": [2, 2, 1],
        "layers": [],
        "node_families": [["rbf", "chebyshev"], ["bspline", "rbf"]],
    }
    fig = figures.network_figure(network)
    tags = {t.name: list(t.text) for t in fig.data if t.name.startswith("node-family-")}
    assert tags == {
        "node-family-bspline": ["B-spl"],
        "node-family-chebyshev": ["Cheb"],
        "node-family-rbf": ["RBF", "RBF"],
    }
    assert fig.data[-1].name == "edges"  # the click targets stay on top
    plain = figures.network_figure({"width": [2, 1], "layers": []})
    assert not any(t.name.startswith("node-family-") for t in plain.data)


def test_feature_ranking_figure_puts_the_most_important_on_top():
    from app.dashboard import figures

    fig = figures.feature_ranking_figure({"features": ["a", "b", "c"], "scores": [0.2, 0.7, 0.1]})
    assert list(fig.data[0].y) == ["c", "a", "b"] and list(fig.data[0].x) == [0.1, 0.2, 0.7]


def test_train_form_sends_the_rbf_options_and_the_new_bases():
    from app.api.schemas import RunCreate
    from app.dashboard.alloy_components import cross_validated_run_request
    from app.dashboard.forms import build_payload
    from app.services.rbf_trainer import check_rbf_options

    selection = {"dataset_id": 1, "target": "y", "features": ["x1"], "task": "regression"}
    values = {
        "model": "rbf_subspace", "hidden": "", "name": "", "grid": 5, "k": 3, "basis": "bspline",
        "update_grid": 0, "activation": "silu", "steps": 100, "lr": 0.01, "optimizer": "adam",
        "batch": None, "lamb": 0, "val": 0.2, "patience": 100, "seed": 0,
        "rbf_dim": 3, "rbf_centres": 24,
    }  # fmt: skip
    payload = build_payload(selection, values)
    assert payload["model_options"] == {"subspace_dim": 3, "centres": 24}
    check_rbf_options(RunCreate.model_validate(payload).model_dump())
    split = {"kind": "group_kfold", "n_splits": 3, "group_by": "composition", "seed": 0}
    body = cross_validated_run_request(payload, split)
    assert body["models"][0]["params"] == {
        "subspace_dim": 3,
        "centres": 24,
        "steps": 100,
        "lr": 0.01,
    }
    LeaderboardModel("RBF", "rbf_subspace", body["models"][0]["params"]).validate()
    with pytest.raises(ValueError, match="Subspace dimension"):
        build_payload(selection, values | {"rbf_dim": None})
    for basis in ("af_kan", "s_kan"):
        kan = build_payload(selection, values | {"model": "kan", "basis": basis})
        assert RunCreate.model_validate(kan).basis == basis
