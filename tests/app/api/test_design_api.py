"""Inverse design through the API (SQLite and PostgreSQL, runs trained in this process by an
inline executor, tiny models and budgets): a design run for a trained KAN on alloy data → ranked
candidates that keep every constraint and the trust region, with descriptors and distances that
agree with an independent computation, and their CSV; random search inside the trust region;
on an ensemble run the mean and calibrated interval (checked against the run's own predictions),
UCB ranking and expected improvement (checked against the normal formula), and on an edited
ensemble run a result that says it ranks by the members as trained; the inputs a
candidate has outside the training range; the input guard (input_margin: echoed, validated,
compositions beyond it never ranked, the note saying what to change); infeasible
constraints → 422 naming the constraint (nothing queued); runs and datasets a design cannot use
→ 409."""

from __future__ import annotations

import csv
import io
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.services.alloys import descriptors_for
from tests.app.api_helpers import make_settings, upload

DEMO = Path(__file__).resolve().parents[3] / "app" / "demo_data"
ELEMENTS = ["Al", "Co", "Cr", "Fe", "Ni"]
FEATURES = ["x_Al", "x_Co", "x_Cr", "x_Fe", "x_Ni", "vec", "delta_pct", "proc_CAST"]
TINY = {"hidden": [2], "grid": 3, "steps": 5, "update_grid_every": 0, "seed": 1}


class InlineExecutor:
    """Trains a submitted run at once, in this process: no trainer process to start."""

    name = "inline"

    def __init__(self, db: Any) -> None:
        self.db = db

    def submit(self, run_id: int) -> None:
        from app.services.training import run_training

        run_training(run_id, "inline@test:", db=self.db)

    def cancel(self, run_id: int) -> None:  # pragma: no cover - nothing is cancelled here
        pass

    def shutdown(self) -> None:
        pass


def _emptied(url: str) -> str:
    """The session's PostgreSQL schema with every table emptied (as ``pg_url`` does)."""
    from sqlalchemy import create_engine, text

    from app.db.models import Base

    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from app.config import get_settings
    from app.db.session import forget_databases
    from app.main import create_app

    data_dir = tmp_path_factory.mktemp("design")
    if request.param == "postgresql":
        url = _emptied(request.getfixturevalue("pg_schema_url"))
    else:
        template = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, data_dir / "kanscope.sqlite3")
        url = f"sqlite:///{data_dir / 'kanscope.sqlite3'}"
    settings = make_settings(url, data_dir)
    with pytest.MonkeyPatch.context() as mp:  # what the trainer's get_settings() reads
        mp.setenv("KANSCOPE_DATABASE_URL", settings.effective_database_url)
        mp.setenv("KANSCOPE_DATA_DIR", str(data_dir))
        get_settings.cache_clear()
        app = create_app(settings, start_executor=False, mount_dashboard=False)
        app.state.executor = InlineExecutor(app.state.db)
        with TestClient(app) as c:
            yield c
        get_settings.cache_clear()
    forget_databases()


@pytest.fixture(scope="module")
def alloy_table() -> pd.DataFrame:
    """The first 160 rows of the shipped MPEA hardness set (formula, x_El, descriptors, HV)."""
    return pd.read_csv(DEMO / "mpea_hardness.csv").head(160)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _train(client: Any, dataset_id: int, features: list[str], target: str, **kw: Any) -> dict:
    body = {"dataset_id": dataset_id, "target_columns": [target], "feature_columns": features}
    created = client.post("/api/runs", json=body | TINY | {"val_fraction": 0.2} | kw)
    assert created.status_code == 201, created.text
    run = client.get(f"/api/runs/{created.json()['id']}").json()
    assert run["status"] == "succeeded", run["error"]
    return run


@pytest.fixture(scope="module")
def runs(client: Any, alloy_table: pd.DataFrame) -> dict[str, Any]:
    ds = upload(client, _csv(alloy_table), "mpea_head.csv")
    ensemble = {"ensemble_members": 3}
    return {
        "dataset": ds,
        "kan": _train(client, ds["id"], FEATURES, "HV"),
        "ensemble": _train(client, ds["id"], FEATURES[:-1], "HV", model_options=ensemble),
    }


def _design(client: Any, run_id: int, request: dict[str, Any]) -> dict[str, Any]:
    started = client.post(f"/api/runs/{run_id}/design", json=request)
    assert started.status_code == 201, started.text
    view = client.get(f"/api/runs/{started.json()['id']}/design").json()
    assert view["status"] == "succeeded", view["error"]
    return view


def test_design_run_proposes_constrained_candidates(client, runs, alloy_table) -> None:
    kan = runs["kan"]
    request = {
        "elements": ELEMENTS,
        "bounds": {"Al": [0.0, 0.2], "Ni": [0.1, 0.5]},
        "min_elements": 4,
        "direction": "max",
        "budget": 60,
        "n_candidates": 5,
        "seed": 2,
        "max_distance": 0.1,
    }
    view = _design(client, kan["id"], request)
    run = client.get(f"/api/runs/{view['run_id']}").json()
    assert run["model"] == "design" and run["parent_run_id"] == kan["id"]
    assert view["progress"]["fraction"] == 1.0 and view["options"]["max_distance"] == 0.1
    result = view["result"]
    assert result["n_evaluations"] == 60 and result["method"] == "de"
    assert result["max_distance"] == 0.1 and result["acquisition"] == "mean"
    assert result["fixed_inputs"] == {"proc_CAST": 1.0}  # most training rows are cast
    cands = result["candidates"]
    assert 1 <= len(cands) <= 5
    predicted = [c["predicted"] for c in cands]
    assert predicted == sorted(predicted, reverse=True)
    assert all(c["lower"] is None and c["std"] is None for c in cands)  # one KAN: no interval
    assert result["interval_of"] is None

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
        assert c["nearest_distance"] <= 0.1 + 1e-4  # the trust region holds
    training = result["training"]
    assert len(training["value"]) == len(train_rows) == len(training["distance"])

    exported = client.get(f"/api/runs/{view['run_id']}/design/candidates.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0][:7] == ["rank", "formula", "x_Al", "x_Co", "x_Cr", "x_Fe", "x_Ni"]
    assert "HV_predicted" in rows[0] and "nearest_distance" in rows[0] and "omega" in rows[0]
    assert len(rows) == len(cands) + 1
    assert float(rows[1][rows[0].index("HV_predicted")]) == pytest.approx(predicted[0])

    # the trust region off: the candidates may go anywhere, and a note says so
    free = _design(client, kan["id"], request | {"max_distance": None})["result"]
    assert free["max_distance"] is None and any("No trust region" in n for n in free["notes"])

    # not a design run; design runs only through the shortcut
    assert client.get(f"/api/runs/{kan['id']}/design").status_code == 404
    direct = client.post(
        "/api/runs",
        json={"dataset_id": runs["dataset"]["id"], "target_columns": ["HV"], "model": "design"},
    )
    assert direct.status_code == 422 and "/design" in direct.json()["detail"]


def test_ensemble_design_gives_the_interval_and_ranks_by_ucb(client, runs) -> None:
    run = runs["ensemble"]
    # every bound pinned to one training alloy (Al1 Co1 Fe1 Ni1): the one candidate is that
    # alloy, so its mean and interval are the run's own prediction for that row
    pinned = {el: [0.25, 0.25] for el in ("Al", "Co", "Fe", "Ni")}
    one = _design(client, run["id"], {"elements": list(pinned), "bounds": pinned, "budget": 20})
    (cand,) = one["result"]["candidates"]
    assert cand["nearest_distance"] == pytest.approx(0.0, abs=1e-9)
    assert one["result"]["interval_level"] == 0.9
    assert one["result"]["interval_of"] == "current model" == one["options"]["interval_of"]
    assert not any("as trained" in n for n in one["result"]["notes"])
    for split in ("train", "validation"):
        p = client.get(f"/api/runs/{run['id']}/predictions", params={"split": split}).json()
        if 3 in p["rows"]:  # the table's row 3 is Al1 Co1 Fe1 Ni1
            k = p["rows"].index(3)
            scale = p["upper"][k][0] - p["lower"][k][0]
            assert cand["predicted"] == pytest.approx(p["y_mean"][k][0], abs=1e-3 * scale)
            assert cand["lower"] == pytest.approx(p["lower"][k][0], abs=1e-3 * scale)
            assert cand["upper"] == pytest.approx(p["upper"][k][0], abs=1e-3 * scale)
            break
    else:
        raise AssertionError("row 3 is in neither split")

    request = {"elements": ELEMENTS, "budget": 60, "n_candidates": 5, "acquisition": "ucb"}
    result = _design(client, run["id"], request)["result"]
    assert result["acquisition"] == "ucb" and result["max_distance"] == 0.15  # the default
    cands = result["candidates"]
    assert cands and all(c["lower"] < c["predicted"] < c["upper"] for c in cands)
    uppers = [c["upper"] for c in cands]
    assert uppers == sorted(uppers, reverse=True)  # ranked by the optimistic end
    assert all(c["nearest_distance"] <= 0.15 + 1e-4 for c in cands)


def test_ensemble_design_ranks_by_expected_improvement(client, runs, alloy_table) -> None:
    from scipy.stats import norm

    run = runs["ensemble"]
    request = {"elements": ELEMENTS, "budget": 60, "n_candidates": 5, "acquisition": "ei"}
    started = client.post(f"/api/runs/{run['id']}/design", json=request)
    assert started.status_code == 201, started.text
    view = client.get(f"/api/runs/{started.json()['id']}/design").json()
    result = view["result"]
    assert result["acquisition"] == "ei" and view["options"]["acquisition"] == "ei"
    # the incumbent: the best measured HV among the run's training rows
    train_rows = client.get(f"/api/runs/{run['id']}/predictions?split=train").json()["rows"]
    best = float(alloy_table.iloc[train_rows]["HV"].max())
    assert result["best_training_value"] == pytest.approx(best)
    cands = result["candidates"]
    assert cands
    gains = []
    for c in cands:  # E[max(Y − f*, 0)] for Y ~ N(mean, std²), by hand
        z = (c["predicted"] - best) / c["std"]
        hand = (c["predicted"] - best) * norm.cdf(z) + c["std"] * norm.pdf(z)
        assert c["expected_improvement"] == pytest.approx(hand, rel=1e-6, abs=1e-9)
        assert c["lower"] <= c["predicted"] <= c["upper"]
        gains.append(c["expected_improvement"])
    assert gains == sorted(gains, reverse=True) and gains[0] > 0  # ranked by EI
    exported = client.get(f"/api/runs/{view['run_id']}/design/candidates.csv").text
    header, first, *_ = list(csv.reader(io.StringIO(exported)))
    assert float(first[header.index("expected_improvement")]) == pytest.approx(gains[0])

    # the mean ranking on the same run still reports each candidate's EI
    plain = _design(client, run["id"], request | {"acquisition": "mean"})["result"]
    assert all(c["expected_improvement"] is not None for c in plain["candidates"])


def test_an_edited_ensemble_run_s_design_says_it_ranks_by_the_trained_members(client, runs) -> None:
    """A symbolic fix changes the run's model, not the members the design ranks by: the
    result says whose predictions they are (interval_of, a note); after a reset it is the
    current model again."""
    run = runs["ensemble"]
    request = {"elements": ELEMENTS, "budget": 30, "n_candidates": 3}
    fixed = client.post(f"/api/runs/{run['id']}/edges/0/0/1/fix", json={"name": "x"})
    assert fixed.status_code == 200, fixed.text
    try:
        view = _design(client, run["id"], request)
    finally:
        assert client.post(f"/api/runs/{run['id']}/reset-edits").status_code == 204
    result = view["result"]
    assert result["interval_of"] == "trained members" == view["options"]["interval_of"]
    assert result["candidates"] and all(c["lower"] is not None for c in result["candidates"])
    note = result["notes"][0]
    assert "3 ensemble members as trained" in note and f"run {run['id']}'s model was edited" in note
    again = _design(client, run["id"], request)["result"]
    assert again["interval_of"] == "current model"
    assert not any("as trained" in n for n in again["notes"])
    # the same search, the same members: the ranking did not change with the edit
    assert [c["formula"] for c in again["candidates"]] == [
        c["formula"] for c in result["candidates"]
    ]


def test_candidates_flag_inputs_outside_the_training_range(client, runs, alloy_table) -> None:
    """Al-rich compositions without a trust region or input guard: each candidate names the
    model inputs that lie outside the training rows' range (checked against the table), and a
    note says so."""
    kan = runs["kan"]
    request = {
        "elements": ELEMENTS, "bounds": {"Al": [0.6, 1.0]}, "min_elements": 2,
        "max_distance": None, "input_margin": None, "budget": 40, "n_candidates": 5,
    }  # fmt: skip
    view = _design(client, kan["id"], request)
    result = view["result"]
    train_rows = client.get(f"/api/runs/{kan['id']}/predictions?split=train").json()["rows"]
    train = alloy_table.iloc[train_rows]
    assert result["candidates"]
    for c in result["candidates"]:
        values = {f"x_{el}": v for el, v in c["composition"].items()}
        values |= {"vec": c["descriptors"]["vec"], "delta_pct": c["descriptors"]["delta_pct"]}
        values["proc_CAST"] = 1.0  # held at its most common training value
        expected = [
            f for f in FEATURES
            if not train[f].min() - 1e-6 <= values[f] <= train[f].max() + 1e-6
        ]  # fmt: skip
        assert c["outside_training_range"] == expected, (c["formula"], values)
    assert "x_Al" in result["candidates"][0]["outside_training_range"]  # Al ≥ 0.6 is unseen
    note = next(n for n in result["notes"] if "outside their training range" in n)
    assert f"x_Al {train['x_Al'].min():.4g}–{train['x_Al'].max():.4g}" in note
    exported = client.get(f"/api/runs/{view['run_id']}/design/candidates.csv").text
    header, first, *_ = list(csv.reader(io.StringIO(exported)))
    flagged = first[header.index("outside_training_range")].split(";")
    assert flagged == result["candidates"][0]["outside_training_range"]


def test_input_margin_is_echoed_validated_and_keeps_inputs_in_range(
    client, runs, alloy_table
) -> None:
    """The default guard (0.1) on the Al-rich design above: every composition has x_Al ≥ 0.6,
    beyond the training rows' x_Al range widened by 10 %, so none is ranked and the note says
    what to change; a wider margin ranks them; bad margins are 422s naming the option."""
    kan = runs["kan"]
    request = {
        "elements": ELEMENTS, "bounds": {"Al": [0.6, 1.0]}, "min_elements": 2,
        "max_distance": None, "budget": 40, "n_candidates": 5,
    }  # fmt: skip
    train_rows = client.get(f"/api/runs/{kan['id']}/predictions?split=train").json()["rows"]
    al = alloy_table.iloc[train_rows]["x_Al"]
    assert al.max() + 0.1 * (al.max() - al.min()) < 0.6  # the guard excludes every candidate
    view = _design(client, kan["id"], request)
    result = view["result"]
    assert view["options"]["input_margin"] == 0.1 and result["input_margin"] == 0.1
    assert result["candidates"] == [] and result["n_feasible"] == 0
    assert result["n_beyond_input_margin"] == result["n_evaluations"] == 40
    note = next(n for n in result["notes"] if "input_margin" in n and "beyond" in n)
    assert f"x_Al {al.min():.4g}–{al.max():.4g}: 40" in note, note
    assert any("raise input_margin (now 0.1) or set it to null" in n for n in result["notes"])

    # a margin of 2 ranges reaches x_Al 0.6 or more: ranked, within the widened range
    wide = _design(client, kan["id"], request | {"input_margin": 2.0})["result"]
    assert wide["input_margin"] == 2.0 and wide["candidates"]
    limit = al.max() + 2.0 * (al.max() - al.min())
    assert all(c["composition"]["Al"] <= limit + 1e-6 for c in wide["candidates"])
    assert all("x_Al" in c["outside_training_range"] for c in wide["candidates"])  # still told

    for value in (-0.1, 11, "far", True):
        r = client.post(
            f"/api/runs/{kan['id']}/design", json={"elements": ELEMENTS, "input_margin": value}
        )
        assert r.status_code == 422 and "input_margin" in r.text, (value, r.text)
    for literal in ("NaN", "Infinity", "-Infinity"):
        r = client.post(
            f"/api/runs/{kan['id']}/design",
            content=f'{{"elements": ["Al", "Co"], "input_margin": {literal}}}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422 and "input_margin" in r.text, (literal, r.text)


def test_random_search_inside_the_trust_region(client, runs) -> None:
    request = {"elements": ELEMENTS, "budget": 40, "n_candidates": 5, "method": "random_trust"}
    result = _design(client, runs["kan"]["id"], request)["result"]
    assert result["method"] == "random_trust" and result["n_evaluations"] == 40
    assert result["candidates"]
    assert all(c["nearest_distance"] <= 0.15 + 1e-4 for c in result["candidates"])
    assert all(c["expected_improvement"] is None for c in result["candidates"])  # one KAN


def test_refusals_name_the_constraint_and_queue_nothing(client, runs, alloy_table) -> None:
    kan = runs["kan"]
    n_runs = len(client.get("/api/runs").json())
    bad = [
        ("bounds", {"elements": ["Al", "Co"], "bounds": {"Al": [0.6, 1.0], "Co": [0.6, 1.0]}}),
        ("elements", {"elements": ["Al", "Xx"]}),
        ("min_elements", {"elements": ["Al", "Co"], "min_elements": 3}),
        # no Al-Co alloy with ≥ 60 % Al lies within 0.15 of these training alloys
        ("max_distance", {"elements": ["Al", "Co"], "bounds": {"Al": [0.6, 1.0]}}),
        ("acquisition", {"elements": ELEMENTS, "acquisition": "ucb"}),  # not an ensemble run
        ("acquisition", {"elements": ELEMENTS, "acquisition": "ei"}),
        ("method", {"elements": ELEMENTS, "method": "random_trust", "max_distance": None}),
    ]
    for constraint, body in bad:
        r = client.post(f"/api/runs/{kan['id']}/design", json=body | {"budget": 20})
        assert r.status_code == 422, (constraint, r.text)
        assert r.json()["detail"].startswith(constraint), r.json()
        if constraint == "acquisition":  # names the fix
            assert "ensemble_members" in r.json()["detail"], r.json()
    for value in (0, -0.1, 1.5, "far"):
        r = client.post(
            f"/api/runs/{kan['id']}/design", json={"elements": ELEMENTS, "max_distance": value}
        )
        assert r.status_code == 422 and "max_distance" in r.text, (value, r.text)
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

    # a dataset with numbers only: no composition column
    rng = np.random.default_rng(0)
    plain = pd.DataFrame({"a": rng.uniform(0, 1, 60), "b": rng.uniform(0, 1, 60)})
    plain["y"] = plain["a"] * 2 + plain["b"]
    ds = upload(client, _csv(plain), "plain.csv")
    numbers = _train(client, ds["id"], ["a", "b"], "y")
    r = client.post(f"/api/runs/{numbers['id']}/design", json={"elements": ["Al", "Co"]})
    assert r.status_code == 409 and "no composition" in r.json()["detail"], r.text

    # a scikit-learn baseline keeps no model to evaluate on new compositions
    body = {"dataset_id": runs["dataset"]["id"], "target_columns": ["HV"], "model": "linear"}
    linear = client.post("/api/runs", json=body | {"feature_columns": FEATURES}).json()
    r = client.post(f"/api/runs/{linear['id']}/design", json={"elements": ["Al", "Co"]})
    assert r.status_code == 409 and "'linear' run" in r.json()["detail"], r.text
    assert client.post("/api/runs/999999/design", json={"elements": ["Al"]}).status_code == 404
