"""Formula discovery through the API on SQLite and PostgreSQL: a background run (``discover``)
for a trained run's data and validation rows, polled for progress, its result next to the
network's R²; option checks; cancellation keeps the best formula so far. Also the suggestion
ranking (R² first) and the dashboard's time-out for formula calls (the server's limit)."""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import numpy as np
import pytest

from app.services.discovery import BUDGET_MAX_S, BUDGET_MIN_S, PROGRESS_STEPS, discovery_options
from app.services.errors import InvalidInputError
from tests.app.api_helpers import FINISHED, upload, wait_for


def product_csv(n: int = 120, seed: int = 0) -> bytes:
    """y = a·b² + ½ with a distractor column c and a text column (never a feature)."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(1, 3, (3, n))
    y = a * b**2 + 0.5
    lines = ["a,b,c,label,y"] + [
        f"{p:.9g},{q:.9g},{r:.9g},k{k % 3},{t:.9g}"
        for k, (p, q, r, t) in enumerate(zip(a, b, c, y, strict=True))
    ]
    return ("\n".join(lines) + "\n").encode()


def kan_body(dataset_id: int, **kw: Any) -> dict[str, Any]:
    body = {
        "dataset_id": dataset_id,
        "target_columns": ["y"],
        "feature_columns": ["a", "b", "c"],
        "hidden": [2],
        "grid": 3,
        "steps": 15,
        "update_grid_every": 0,
        "seed": 3,
        "val_fraction": 0.25,
    }
    return body | kw


def unexplained(r2: float) -> float:
    return 1.0 - r2 + 1e-6


def test_discovery_for_a_trained_run_in_the_background(client) -> None:
    ds = upload(client, product_csv(), "product.csv")
    kan = wait_for(client, client.post("/api/runs", json=kan_body(ds["id"])).json()["id"])
    assert kan["status"] == "succeeded", kan["error"]

    # suggestions: R² first; near-equal fits (within 0.05 decades) keep the simpler first
    sugg = client.get(f"/api/runs/{kan['id']}/edges/0/1/0/suggestions").json()["suggestions"]
    r2 = [s["r2"] for s in sugg]
    assert len(r2) >= 3 and all(v is not None for v in r2)
    for first, second in zip(r2, r2[1:], strict=False):
        assert unexplained(first) <= unexplained(second) * 10**0.05 + 1e-12, sugg
    assert unexplained(r2[0]) <= unexplained(max(r2)) * 10**0.05 + 1e-12, sugg

    # not a discovery run yet; no such run
    missing = client.get(f"/api/runs/{kan['id']}/discovery")
    assert (
        missing.status_code == 404 and f"/api/runs/{kan['id']}/discover" in missing.json()["detail"]
    )
    assert client.post("/api/runs/999999/discover", json={"budget_s": 5}).status_code == 404
    too_long = client.post(f"/api/runs/{kan['id']}/discover", json={"budget_s": 10_000})
    assert too_long.status_code == 422

    # started as a child run with the parent's data and split; idempotent
    key = {"Idempotency-Key": "discover-once"}
    started = client.post(f"/api/runs/{kan['id']}/discover", json={"budget_s": 5}, headers=key)
    assert started.status_code == 201, started.text
    child = started.json()
    again = client.post(f"/api/runs/{kan['id']}/discover", json={"budget_s": 5}, headers=key)
    assert again.status_code == 200 and again.json()["id"] == child["id"]
    assert child["model"] == "discover" and child["parent_run_id"] == kan["id"]
    for key_name in ("seed", "val_fraction", "feature_columns", "target_columns"):
        assert child["config"][key_name] == kan["config"][key_name], key_name
    assert child["config"]["model_options"] == {"budget_s": 5.0}
    listed = client.get("/api/runs", params={"parent_run_id": kan["id"], "model": "discover"})
    assert [r["id"] for r in listed.json()["runs"]] == [child["id"]]

    # polled while it runs: never inside the request, progress between 0 and 1
    seen: list[tuple[str, float]] = []
    deadline = time.monotonic() + 120
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/api/runs/{child['id']}/discovery")
        assert r.status_code == 200, r.text
        view = r.json()
        seen.append((view["status"], view["progress"]["fraction"]))
        if view["status"] in FINISHED:
            break
        assert view["result"] is None and 0 <= view["progress"]["fraction"] <= 1
        time.sleep(0.2)
    assert view["status"] == "succeeded", view["error"]
    assert view["progress"]["fraction"] == 1.0 and view["budget_s"] == 5.0
    assert view["target"] == "y" and view["features"] == ["a", "b", "c"]
    assert any(status in ("queued", "running") for status, _ in seen)

    result = view["result"]
    chosen = result["formula"]
    assert chosen["formula"] and chosen["latex"] and chosen["complexity"] >= 1
    assert [f["complexity"] for f in result["front"]] == sorted(
        f["complexity"] for f in result["front"]
    )
    assert sum(f["chosen"] for f in result["front"]) == 1
    assert result["n_rows_train"] == kan["summary"]["n_rows_train"] == 90
    assert result["n_rows_validation"] == kan["summary"]["n_rows_val"] == 30
    assert result["seconds"] <= 5 * 1.5 + 2  # within the budget (plus sympy's last words)
    # y = a·b² + ½ exactly: the held-out R² of what it finds is high, and stored as val_metric
    assert chosen["val_r2"] > 0.95 and view["val_r2"] == chosen["val_r2"]
    assert set(result["symbols"].values()) == {"a", "b", "c"}

    # compared with the parent KAN on exactly the same validation rows
    [compared] = view["comparison"]
    assert compared["run_id"] == kan["id"] and compared["model"] == "kan"
    assert set(compared["roles"]) == {"parent", "best kan"}
    assert math.isclose(compared["r2"], kan["summary"]["val_metric"])
    preds = client.get(f"/api/runs/{child['id']}/predictions").json()
    kan_preds = client.get(f"/api/runs/{kan['id']}/predictions").json()
    assert preds["rows"] == kan_preds["rows"]
    assert math.isclose(preds["metric"], chosen["val_r2"], rel_tol=1e-4, abs_tol=1e-4)

    # progress rows: steps in thousandths, strictly increasing
    steps = [p["step"] for p in client.get(f"/api/runs/{child['id']}/metrics").json()["points"]]
    assert steps and steps == sorted(set(steps)) and steps[-1] >= PROGRESS_STEPS


def test_discovery_run_for_a_dataset_checks_options_and_stops_on_cancel(client) -> None:
    ds = upload(client, product_csv(60, seed=1), "product.csv")
    body = {
        "dataset_id": ds["id"],
        "target_columns": ["y"],
        "feature_columns": ["a", "b"],
        "model": "discover",
        "model_options": {"budget_s": 30},
    }
    bad = [
        ({"model_options": {"budget_s": 1}}, "budget_s"),
        ({"model_options": {"budget_s": True}}, "budget_s"),
        ({"model_options": {"budget": 10}}, "Unknown option"),
        ({"model_options": {"noise": 1.5}}, "noise"),
        ({"target_columns": ["y", "c"], "feature_columns": ["a", "b"]}, "one target"),
        ({"target_columns": ["label"], "task": "classification"}, "does not support"),
    ]
    for change, words in bad:
        r = client.post("/api/runs", json=body | change)
        assert r.status_code == 422 and words in r.json()["detail"], (change, r.text)
    assert client.get("/api/runs").json()["runs"] == []  # nothing was queued

    # a discovery straight from the dataset (no parent), cancelled once it runs: the run ends
    # "cancelled" and keeps the best formula found so far
    created = client.post("/api/runs", json=body)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    assert created.json()["parent_run_id"] is None
    wait_for(client, run_id, ("running", *FINISHED))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = client.get(f"/api/runs/{run_id}/discovery").json()
        if view["progress"]["fraction"] > 0 or view["status"] in FINISHED:
            break
        time.sleep(0.1)
    client.post(f"/api/runs/{run_id}/cancel")
    run = wait_for(client, run_id, timeout=60)
    view = client.get(f"/api/runs/{run_id}/discovery").json()
    if run["status"] == "cancelled":  # (a very fast search may finish before the cancel lands)
        assert view["result"] is not None and view["result"]["formula"]["formula"]
        assert any("Stopped early" in n for n in view["result"]["notes"])
        assert run["summary"]["stopped_reason"] == "cancelled"
    else:
        assert run["status"] == "succeeded", run["error"]
    assert view["progress"]["elapsed_s"] is not None and view["progress"]["elapsed_s"] < 30

    limits = client.get("/api/limits").json()
    assert limits["discovery_budget_s"] == {"min": 5.0, "max": 600.0, "default": 60.0}
    assert limits["formula_timeout_s"] > 0
    kinds = {m["name"]: m for m in client.get("/api/models").json()}
    assert kinds["discover"]["tasks"] == ["regression"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, {"budget_s": 60.0, "noise": None}),
        ({"budget_s": BUDGET_MIN_S, "noise": 0}, {"budget_s": BUDGET_MIN_S, "noise": 0.0}),
        ({"budget_s": BUDGET_MAX_S, "noise": None}, {"budget_s": BUDGET_MAX_S, "noise": None}),
    ],
)
def test_discovery_options(options: Any, expected: dict[str, Any]) -> None:
    assert discovery_options(options) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"budget_s": BUDGET_MIN_S - 1},
        {"budget_s": BUDGET_MAX_S + 1},
        {"budget_s": float("nan")},
        {"budget_s": "60"},
        {"noise": -0.1},
        {"noise": 1.0},
        {"seed": 1},
    ],
)
def test_discovery_options_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        discovery_options(options)


def test_dashboard_waits_as_long_as_the_servers_formula_limit(monkeypatch) -> None:
    """The formula and auto-symbolic calls time out after the server's own limits (from
    GET /limits) plus a margin, not the dashboard's 30 s default."""
    from app.dashboard import api_client

    monkeypatch.setattr(api_client, "_limits_by_api", {})
    timeouts: dict[str, dict[str, Any]] = {}
    limits_status = {"code": 200}

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts[request.url.path] = request.extensions["timeout"]
        if request.url.path.endswith("/limits"):
            limits = {"formula_timeout_s": 123.0, "auto_symbolic_timeout_s": 45.0}
            return httpx.Response(limits_status["code"], json=limits)
        return httpx.Response(200, json={"ok": True})

    for base in ("http://limits-test/api", "http://limits-down/api"):
        monkeypatch.setattr(
            api_client,
            "_client",
            httpx.Client(
                base_url=base,
                transport=httpx.MockTransport(handler),
                timeout=api_client._TIMEOUT,  # the dashboard's default, as configure() sets
            ),
        )
        limits_status["code"] = 200 if "test" in base else 503
        api_client.run_formula(7)
        api_client.auto_symbolic(7, 0.9)
        api_client.run_network(7)
        fallback = api_client.DEFAULT_FORMULA_TIMEOUT_S + api_client.SLOW_CALL_MARGIN_S
        up = "test" in base
        expected = 123.0 + api_client.SLOW_CALL_MARGIN_S if up else fallback
        assert timeouts["/api/runs/7/formula"]["read"] == expected
        auto = 45.0 + api_client.SLOW_CALL_MARGIN_S if up else fallback
        assert timeouts["/api/runs/7/auto-symbolic"]["read"] == auto
        default = api_client._TIMEOUT.read
        assert default is not None and default < expected
        assert timeouts["/api/runs/7/network"]["read"] == default  # other calls: the default


def test_progress_reports_steps_in_thousandths_and_stops_when_asked(monkeypatch) -> None:
    from types import SimpleNamespace

    from app.services import discovery

    answers: list[bool] = []
    reported: list[int] = []

    def report(p: Any) -> bool:
        reported.append(p.step)
        return answers.pop(0) if answers else True

    clock = {"now": 100.0}
    monkeypatch.setattr(discovery.time, "perf_counter", lambda: clock["now"])
    progress = discovery._Progress(SimpleNamespace(report=report), budget_s=5.0)
    assert progress("checking data", 0.02) is True
    assert progress("constants", 0.02) is True  # same fraction: the step still moves on
    assert progress("term search", 0.5) is True
    assert reported == [20, 21, 500]
    answers.append(False)  # cancel requested / claim lost
    assert progress("KAN", 0.6) is False and progress.cancelled
    assert progress("done", 1.0) is True  # finished anyway: the result is not thrown away

    late = discovery._Progress(SimpleNamespace(report=report), budget_s=5.0)
    clock["now"] += discovery.overrun_limit_s(5.0) + 1
    assert late("KAN", 0.7) is False and late.overran and not late.cancelled
