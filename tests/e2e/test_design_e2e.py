"""The Design page in a real browser against the shared ``kanscope serve``: a KAN trained (via the
API, 5 steps) on a slice of the MPEA hardness set → Design page with that run → a 30-evaluation
design with bounds and the default trust region → progress, then the ranked candidates in the
table and drawn against the training alloys, with a CSV download; an impossible bound is refused
with the API's message. On a 3-member ensemble run ranked by expected improvement: the interval
and expected-improvement columns hold the API's numbers (lower ≤ predicted ≤ upper, EI ≥ 0 and
falling with rank) and the summary names the ranking."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.e2e.plotly_helpers import wait_for_trace
from tests.e2e.server_process import wait_for_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DEMO = Path(__file__).resolve().parents[2] / "app" / "demo_data"
FEATURES = ["x_Al", "x_Co", "x_Cr", "x_Fe", "x_Ni", "vec", "delta_pct"]


def trained_run(api, **extra: object) -> int:
    table = pd.read_csv(DEMO / "mpea_hardness.csv").head(120)
    files = {"file": ("design_e2e.csv", table.to_csv(index=False).encode(), "text/csv")}
    ds = api.post("/datasets", files=files)
    assert ds.status_code == 201, ds.text
    body = {
        "dataset_id": ds.json()["id"], "target_columns": ["HV"], "feature_columns": FEATURES,
        "hidden": [2], "grid": 3, "steps": 5, "update_grid_every": 0, "name": "design e2e",
    } | extra  # fmt: skip
    created = api.post("/runs", json=body)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    run = wait_for_run(api, run_id, timeout_s=120)
    assert run["status"] == "succeeded", run["error"]
    return run_id


@pytest.mark.timeout(240)
def test_design_page_runs_a_design_and_shows_candidates(page, kanscope_server) -> None:
    base, api = kanscope_server.url, kanscope_server.api
    run_id = trained_run(api)
    page.goto(f"{base}/design?run={run_id}")
    page.wait_for_selector("#dz-start")
    assert page.locator(".nav-link", has_text="Design").count() == 1
    # the target value is asked for only when the goal is to hit one
    assert page.is_disabled("#dz-target")
    page.get_by_label("hit a value").check()
    page.wait_for_function("!document.querySelector('#dz-target').disabled")
    page.get_by_label("maximise").check()
    page.wait_for_function("document.querySelector('#dz-target').disabled")

    # an impossible bound: the API's 422 names the constraint, nothing starts
    page.fill("#dz-elements", "Al Co")
    page.fill("#dz-bounds", "Al 0.7-1, Co 0.7-1")
    page.click("#dz-start")
    page.wait_for_selector("#dz-start-alert .alert")
    assert "lower bounds sum to 1.4" in page.inner_text("#dz-start-alert")

    page.fill("#dz-elements", "Al Co Cr Fe Ni")
    page.fill("#dz-bounds", "Al 0-0.2")
    page.fill("#dz-k", "4")
    assert page.input_value("#dz-max-distance") == "0.15"  # the trust region is on by default
    assert page.input_value("#dz-input-margin") == "0.1"  # so is the input guard
    page.fill("#dz-budget", "30")
    page.fill("#dz-n", "5")
    page.click("#dz-start")
    page.wait_for_function(
        "() => document.querySelector('#dz-status').innerText.trim() === 'succeeded'",
        timeout=120_000,
    )
    formulas = page.locator("#dz-table td[data-dash-column=formula]").all_inner_texts()
    assert 1 <= len(formulas) <= 5 and all("Al" in f or "Co" in f for f in formulas), formulas
    ranks = [int(t) for t in page.locator("#dz-table td[data-dash-column=rank]").all_inner_texts()]
    assert ranks == list(range(1, len(ranks) + 1))
    assert "within 0.15 of a training alloy" in page.inner_text("#dz-notes")
    assert "model inputs within their training range ± 0.1 of it" in page.inner_text("#dz-notes")
    wait_for_trace(page, "dz-figure", "candidates (predicted)")
    href = page.get_attribute("#dz-csv", "href")
    assert href and href.endswith("/design/candidates.csv")
    csv_text = api.get(href.removeprefix("/api")).text
    assert csv_text.splitlines()[0].startswith("rank,formula,x_Al")
    assert not page.js_errors  # type: ignore[attr-defined]


def _cells(page, column: str) -> list[float]:
    texts = page.locator(f"#dz-table td[data-dash-column={column}]").all_inner_texts()
    return [float(t) for t in texts]


@pytest.mark.timeout(240)
def test_ensemble_design_ranked_by_expected_improvement(page, kanscope_server) -> None:
    base, api = kanscope_server.url, kanscope_server.api
    run_id = trained_run(api, model_options={"ensemble_members": 3}, name="design e2e ensemble")
    page.goto(f"{base}/design?run={run_id}")
    page.wait_for_selector("#dz-start")
    page.check("#dz-acquisition input[value=ei]")
    page.fill("#dz-elements", "Al Co Cr Fe Ni")
    page.fill("#dz-k", "3")
    page.fill("#dz-budget", "30")
    page.fill("#dz-n", "5")
    page.click("#dz-start")
    page.wait_for_function(
        "() => document.querySelector('#dz-status').innerText.trim() === 'succeeded'",
        timeout=120_000,
    )
    page.wait_for_selector("#dz-table td[data-dash-column=expected_improvement]")
    headers = page.locator("#dz-table th").all_inner_texts()
    for name in ("predicted", "lower (90 %)", "upper (90 %)", "expected improvement"):
        assert any(h.strip() == name for h in headers), headers
    predicted, lower, upper = (_cells(page, c) for c in ("predicted", "lower", "upper"))
    gains = _cells(page, "expected_improvement")
    assert 1 <= len(predicted) <= 5 and len(lower) == len(upper) == len(gains) == len(predicted)
    assert all(lo < p < hi for lo, p, hi in zip(lower, predicted, upper, strict=True))
    assert all(g >= 0 for g in gains) and gains == sorted(gains, reverse=True)
    notes = page.inner_text("#dz-notes")
    assert "ranked by expected improvement over the best training alloy" in notes, notes
    assert "intervals at 90 % (ensemble)" in notes

    # the table shows the API's numbers (rounded to 4 decimals)
    design_id = int(page.get_attribute("#dz-csv", "href").split("/")[-3])
    result = api.get(f"/runs/{design_id}/design").json()["result"]
    assert result["acquisition"] == "ei"
    for k, cand in enumerate(result["candidates"]):
        assert predicted[k] == pytest.approx(cand["predicted"], abs=1e-4)
        assert lower[k] == pytest.approx(cand["lower"], abs=1e-4)
        assert gains[k] == pytest.approx(cand["expected_improvement"], abs=1e-4)
    assert "Traceback" not in page.inner_text("body")
    assert not page.js_errors  # type: ignore[attr-defined]
