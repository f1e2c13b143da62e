"""An ensemble KAN run in a real browser (shared ``kanscope serve``): the parity plot shows the
members' mean with its interval as error bars, the edge plot the members' band, the ensemble
card says which model the page shows and lists formula stability on demand."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.plotly_helpers import click_edge, wait_for_trace
from tests.e2e.server_process import wait_for_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INTERVAL = "ensemble mean, 90 % interval"
BAND = "3 members, 90 % band"

ERROR_BARS_JS = """([graphId, name]) => {
  const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
  const t = gd.data.find(t => t.name === name);
  return {n: t.x.length, up: t.error_y.array, down: t.error_y.arrayminus};
}"""


def _csv(n: int = 60) -> bytes:
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (n, 2))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.05 * rng.standard_normal(n)
    rows = [f"{a:.6g},{b:.6g},{c:.6g}" for (a, b), c in zip(x, y, strict=True)]
    return ("a,b,y\n" + "\n".join(rows) + "\n").encode()


@pytest.mark.timeout(240)
def test_interval_on_parity_plot_and_band_on_edge_plot(page, kanscope_server, screenshot_dir):
    base, api = kanscope_server.url, kanscope_server.api
    ds = api.post("/datasets", files={"file": ("ens.csv", _csv(), "text/csv")}).json()
    body = {
        "dataset_id": ds["id"],
        "target_columns": ["y"],
        "hidden": [2],
        "grid": 3,
        "steps": 15,
        "model_options": {"ensemble_members": 3, "ensemble_bootstrap": "rows"},
    }
    created = api.post("/runs", json=body)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    run = wait_for_run(api, run_id, timeout_s=120)
    assert run["status"] == "succeeded", run["error"]

    page.goto(f"{base}/runs/{run_id}")
    wait_for_trace(page, "run-predictions", INTERVAL)
    bars = page.evaluate(ERROR_BARS_JS, ["run-predictions", INTERVAL])
    n_val = run["summary"]["n_rows_val"]
    assert bars["n"] == n_val == len(bars["up"]) == len(bars["down"])
    assert all(u > 0 for u in bars["up"]) and all(d > 0 for d in bars["down"])
    card = page.inner_text("#run-ensemble")
    assert "Ensemble of 3 KANs" in card and "member 0 (seed 0)" in card
    assert "validation rows" in card

    wait_for_trace(page, "run-network", "edges")
    click_edge(page, "run-network", 0)
    wait_for_trace(page, "run-edge", BAND)

    page.click("#run-ensemble-stability")
    page.wait_for_selector("#run-ensemble-stability-table td[data-dash-column=agree]")
    agree = page.locator("#run-ensemble-stability-table td[data-dash-column=agree]")
    texts = agree.all_inner_texts()
    assert len(texts) == 2 * 2 + 2 and all(t.endswith("/ 3") for t in texts), texts
    page.screenshot(path=screenshot_dir / "40_ensemble_run.png", full_page=True)

    # an edit changes the run's model, not the members: the page says whose interval it is
    assert api.post(f"/runs/{run_id}/edges/0/0/0/fix", json={"name": "x"}).status_code == 200
    page.reload()
    wait_for_trace(page, "run-predictions", INTERVAL + " (trained members, before the edits)")
    page.wait_for_function(
        "() => document.querySelector('#run-ensemble').innerText.includes('edited after')"
    )
    assert api.post(f"/runs/{run_id}/reset-edits").status_code == 204
    assert not page.js_errors, page.js_errors
