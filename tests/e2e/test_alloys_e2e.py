"""The alloy workflow in a real browser against a real ``kanscope serve``.

Upload the raw MPEA CSV → featurise its FORMULA column (the rows with unknown elements are listed
with their CSV line first; the user then chooses to leave them out) → the new dataset version is
selected → Leaderboard: KAN, MLP and the three scikit-learn baselines on the same grouped folds →
the table with one row per model and a predicted-vs-measured plot per model.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.plotly_helpers import trace_length
from tests.e2e.server_process import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MPEA_CSV = REPO / "app" / "demo_data" / "MPEA_dataset.csv"
TARGET = "PROPERTY: HV"
FEATURES = ["vec", "delta_pct", "smix_J_molK", "dhmix_kJ_mol"]
MODELS = {"KAN", "MLP", "Ridge", "Random forest", "Gradient boosting"}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \".*\", line \d+")


def exact(text: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def set_number(page, selector: str, value) -> None:
    page.fill(selector, str(value))
    page.press(selector, "Tab")  # debounce=True inputs commit on blur


@pytest.mark.timeout(240)
def test_featurise_mpea_and_run_a_leaderboard(page, kanscope_server, screenshot_dir):
    started = time.monotonic()
    page.goto(kanscope_server.url + "/")
    page.wait_for_selector("#ds-upload")

    # ── Datasets: upload the raw MPEA file; the formula column is detected ──
    page.set_input_files("#ds-upload input[type=file]", str(MPEA_CSV))
    page.wait_for_selector("#ds-upload-alert .alert", timeout=30_000)
    assert "1,545 rows" in page.inner_text("#ds-upload-alert")
    page.wait_for_function(
        "() => (document.querySelector('#fz-detected') || {}).innerText"
        "?.includes('Detected formula column: “FORMULA”')"
    )
    assert page.inner_text("#fz-column").strip() == "FORMULA"

    # ── Featurise with the default policy: bad rows are listed, nothing is created ──
    page.click("#fz-run")
    page.wait_for_selector("#fz-alert .alert-warning", timeout=30_000)
    warning = page.inner_text("#fz-alert")
    assert re.search(r"\d+ of 1,545 rows cannot be featurised", warning), warning
    first_error = page.locator("#fz-errors-table tbody tr").nth(1)  # row 0 is the header row
    cells = first_error.locator("td").all_inner_texts()
    assert len(cells) == 4, cells
    assert int(cells[1]) == int(cells[0]) + 2  # CSV line = 0-based row + header + 1
    assert "elemental data table" in cells[3] or "element" in cells[3].lower(), cells
    n_bad = int(re.search(r"(\d+) of 1,545", warning).group(1))
    page.screenshot(path=screenshot_dir / "alloys_01_featurise_errors.png", full_page=True)

    # ── … the user decides to leave them out: a new version is created and selected ──
    page.locator("#fz-on-error label", has_text="leave them out").click()
    page.click("#fz-run")
    page.wait_for_selector("#fz-alert .alert-success", timeout=30_000)
    success = page.inner_text("#fz-alert")
    assert "featurised" in success and f"{1545 - n_bad:,} rows" in success, success
    page.wait_for_function(
        "() => document.querySelector('#ds-select')?.innerText?.includes('featurised')"
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#ds-preview-table th')]"
        ".some(th => th.innerText.trim() === 'vec')"
    )
    page.screenshot(path=screenshot_dir / "alloys_02_featurised.png", full_page=True)

    # ── Leaderboard on the featurised version: small, so that the test stays quick ──
    page.click("a.nav-link[href='/leaderboard']")
    page.wait_for_url(re.compile(r"/leaderboard$"))
    page.wait_for_function(
        "() => document.querySelector('#lb-dataset')?.innerText?.includes('featurised')"
    )
    page.wait_for_function("() => document.querySelectorAll('#lb-features input').length > 10")
    page.click("#lb-target")
    page.locator(".dash-dropdown-option", has_text=exact(TARGET)).click()
    page.keyboard.press("Escape")  # the open option list can cover the buttons below it
    page.wait_for_selector(".dash-dropdown-option", state="detached")
    page.click("#lb-features-none")
    page.wait_for_function(
        "() => document.querySelectorAll('#lb-features input:checked').length === 0"
    )
    page.click("#lb-start")  # a readable warning, not a request, without features
    page.wait_for_selector("#lb-alert .alert-warning")
    assert "Choose at least one feature column" in page.inner_text("#lb-alert")
    for name in FEATURES:
        page.locator("#lb-features label", has_text=exact(name)).click()
    page.wait_for_function(
        "() => document.querySelectorAll('#lb-features input:checked').length === 4"
    )
    assert "composition" in page.inner_text("#lb-group")
    set_number(page, "#lb-folds", 3)
    set_number(page, "#lb-steps", 40)
    page.click("#lb-start")
    page.wait_for_selector("#lb-alert .alert-success", timeout=30_000)
    queued = page.inner_text("#lb-alert")
    assert "5 models × 3 folds" in queued
    board_id = re.search(r"Leaderboard ([0-9a-f]+) queued", queued).group(1)
    page.wait_for_selector("#lb-progress-text")  # progress while it runs
    assert "models finished" in page.inner_text("#lb-progress-text")
    page.wait_for_function(
        "() => (document.querySelector('#lb-progress-text') || {}).innerText"
        "?.startsWith('5 of 5 models finished')",
        timeout=150_000,
    )
    progress = page.inner_text("#lb-progress-text")
    assert "3 folds grouped by composition" in progress, progress

    # ── The table: one row per model, scores as mean ± std over the 3 folds ──
    page.wait_for_selector("#lb-results td[data-dash-column=model]")
    names = page.locator("#lb-results td[data-dash-column=model]").all_inner_texts()
    assert {n.strip() for n in names} == MODELS, names
    statuses = page.locator("#lb-results td[data-dash-column=status]").all_inner_texts()
    assert {s.strip() for s in statuses} == {"succeeded"}, statuses
    scores = page.locator("#lb-results td[data-dash-column=score]").all_inner_texts()
    assert all("±" in s for s in scores), scores
    folds = page.locator("#lb-results td[data-dash-column=folds]").all_inner_texts()
    assert {f.strip() for f in folds} == {"3"}, folds
    params = page.locator("#lb-results td[data-dash-column=parameters]").all_inner_texts()
    assert all(re.fullmatch(r"[\d,]+", p.strip()) for p in params), params
    header = (
        page.inner_text("#lb-results thead") if page.query_selector("#lb-results thead") else ""
    )
    header = header or page.inner_text("#lb-results")
    assert "R² (mean ± std)" in header and "MAE (mean ± std)" in header

    # ── A predicted-vs-measured plot per model ──
    page.wait_for_function(
        "() => document.querySelectorAll('#lb-plots .js-plotly-plot').length === 5"
    )
    plotted = page.eval_on_selector_all(
        "#lb-plots .lb-plot", "els => els.map(e => e.getAttribute('data-model'))"
    )
    assert set(plotted) == MODELS, plotted
    n_points = page.evaluate(
        "() => document.querySelector('#lb-plots .js-plotly-plot').data"
        ".find(t => t.name === 'out-of-fold').x.length"
    )
    assert n_points > 100  # out-of-fold predictions of every measured hardness
    set_number(page, "#lb-folds", 5)  # the form drifts from the board shown…
    set_number(page, "#lb-steps", 99)
    page.click("#lb-history")  # the new leaderboard is listed for later
    option = page.locator(".dash-dropdown-option", has_text=board_id)
    assert option.count() == 1
    option.click()  # …and opening the board sets the form back to the board's settings
    page.wait_for_function("() => document.querySelector('#lb-folds').value === '3'")
    assert page.input_value("#lb-steps") == "40"
    assert page.locator("#lb-features input:checked").count() == 4
    assert not TRACEBACK.search(page.inner_text("body"))
    assert not page.js_errors, page.js_errors  # type: ignore[attr-defined]
    page.screenshot(path=screenshot_dir / "alloys_03_leaderboard.png", full_page=True)
    print(f"alloy e2e took {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(180)
def test_train_page_grouped_k_fold_run(page, kanscope_server, screenshot_dir):
    """Train page split options: a KAN evaluated by 3-fold CV grouped by composition (here the
    Gorsse file's element columns); the folds are stored with the run."""
    gorsse = REPO / "app" / "demo_data" / "Gorsse2018ML_Data_RawHV.csv"
    response = kanscope_server.api.post(
        "/datasets", files={"file": (gorsse.name, gorsse.read_bytes(), "text/csv")}
    )
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]

    page.goto(kanscope_server.url + "/")
    page.wait_for_function(
        f"() => document.querySelector('#ds-select')?.innerText?.includes('{gorsse.stem}')"
    )
    page.wait_for_selector("#ds-preview-table")
    assert page.inner_text("#ds-target") == "HV"
    page.click("#ds-features-none")  # a server callback: clicks before it lands are undone
    page.wait_for_function(
        "() => document.querySelectorAll('#ds-features input:checked').length === 0"
    )
    for name in ("VEC", "Delta"):
        page.locator("#ds-features label", has_text=exact(name)).click()
    page.wait_for_function(
        "() => document.querySelectorAll('#ds-features input:checked').length === 2"
    )
    page.click("#ds-to-train")
    page.wait_for_url(re.compile(r"/train$"))
    page.wait_for_selector("#tr-selection .kv")

    assert not page.is_visible("#tr-folds")  # hold-out by default
    page.locator("#tr-split label", has_text="grouped K-fold CV").click()
    page.wait_for_selector("#tr-folds", state="visible")
    page.wait_for_function(
        "() => document.querySelector('#tr-group')?.innerText?.includes('composition')"
    )
    assert "element columns" in page.inner_text("#tr-group")
    set_number(page, "#tr-folds", 3)
    page.fill("#tr-hidden", "2")
    page.press("#tr-hidden", "Tab")
    set_number(page, "#tr-steps", 30)
    page.click("#tr-start")
    page.wait_for_selector("#tr-open-link a", timeout=30_000)
    page.wait_for_function(
        "() => ['succeeded', 'failed'].includes("
        "document.querySelector('#tr-status-badge')?.innerText)",
        timeout=90_000,
    )
    assert page.inner_text("#tr-status-badge") == "succeeded", page.inner_text("#tr-status")
    # progress of every fold arrived (the folds' steps follow one another)
    assert trace_length(page, "tr-loss", "train loss") > 30
    assert "× 3 folds" in page.inner_text("#tr-step")
    assert "cv mean r²" in page.inner_text("#tr-status").lower()
    page.screenshot(path=screenshot_dir / "alloys_04_train_kfold.png", full_page=True)

    run_id = int(page.inner_text("#tr-run-id"))
    run = kanscope_server.api.get(f"/runs/{run_id}").json()
    assert run["dataset_id"] == dataset_id and run["model"] == "kan"
    cv = run["config"]["cv"]
    assert cv["split"]["spec"] == {
        "n_splits": 3,
        "group_by": "composition",
        "seed": 0,
        "stratify": False,
    }
    assert cv["entry"]["params"]["steps"] == 30 and cv["entry"]["params"]["hidden"] == [2]
    assert len(run["summary"]["cv"]["folds"]) == 3
    assert not TRACEBACK.search(page.inner_text("body"))
