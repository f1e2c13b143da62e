"""Dashboard speed: network-diagram render time and click-to-edge-detail latency.

Starts a real ``kanscope serve`` (temp SQLite), uploads the demo CSV, trains a [10, 16, 16, 1] KAN
for a few steps, then in headless Debian chromium at 1280×800:

1. **diagram render**: the run's ``/network`` JSON → :func:`app.dashboard.figures.network_figure`
   → ``Plotly.newPlot`` on a blank page, until the next animation frame (first render; median).
2. **diagram in the app**: from opening ``/runs/<id>`` to the diagram's edges being drawn, and
   **formula in the app**: until the formula block is shown (typeset, or its LaTeX source when
   too long to typeset). The clicks start after it, as a user reading the page would: a typeset
   150 000-character formula slowed every click (results/dashboard_issue22_latency.md).
3. **click → edge curve**: from the mouse-down on an edge to the animation frame after the edge
   plot shows that edge's curve (drawn in the browser from the curves the page holds), and
   **click → full detail**: until the server's figure with the data's pre-activations is painted
   (Dash callback → pooled httpx → API → model inspection). Median and p90 over many edges.
4. **Train click → first curve point** on a 300-step KAN with the Datasets page's defaults
   (issue #22's goal: < 1.5 s; Start's answer draws the point, see results/
   dashboard_issue22_latency.md for where the time goes), and
   **reload → reattached**: a reload of the Train page mid-run until the run's id, link and
   curve are back (goal < 2 s).

Usage: ``python benchmarks/bench_dashboard.py [--clicks 21] [--renders 9] [--json out.json]
[--repo PATH]`` (``--repo``: serve another checkout, e.g. a ``git worktree`` of an older commit,
with this bench; the figure-build numbers are always this checkout's)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import plotly  # noqa: E402
from plotly_helpers import edge_position, hover_edge, wait_for_trace  # noqa: E402
from server_process import CHROMIUM, CHROMIUM_ARGS, DEMO_CSV, VIEWPORT, ServerProcess  # noqa: E402

from app.dashboard import figures  # noqa: E402

DESCRIPTORS = [
    "Delta",
    "Gamma",
    "Enthalpy of Mixing",
    "Electronegativity",
    "VEC",
    "Configurational Entropy",
    "Weighted Melting Temperature",
    "Yang Parameter",
    "Asymmetry",
    "e/a",
]

RENDER_JS = """([figure, plotlySrc]) => new Promise((resolve) => {
  const fallback = setTimeout(() => resolve(-1), 20000);
  const div = document.createElement('div');
  div.style.width = '1200px'; div.style.height = figure.layout.height + 'px';
  document.body.innerHTML = ''; document.body.appendChild(div);
  const t0 = performance.now();
  Plotly.newPlot(div, figure.data, figure.layout, {displaylogo: false}).then(() => {
    requestAnimationFrame(() => { clearTimeout(fallback); resolve(performance.now() - t0); });
  });
})"""

ARM_CLICK_JS = """(label) => {
  window.__preview = undefined; window.__full = undefined;
  const start = () => {
    const t0 = performance.now();
    window.__clickStart = t0;
    const check = () => {
      const gd = document.querySelector('#run-edge .js-plotly-plot');
      const title = gd && gd.layout && gd.layout.title ? (gd.layout.title.text || '') : '';
      const shown = title.includes(label);
      const full = shown && gd.data.some(t => t.name === 'data (pre-activations)');
      if (shown && window.__preview === undefined) {
        requestAnimationFrame(() => { window.__preview = performance.now() - t0; });
      }
      if (full) {
        requestAnimationFrame(() => { window.__full = performance.now() - t0; });
      } else if (performance.now() - t0 > 15000) {
        window.__full = -1;
      } else {
        requestAnimationFrame(check);
      }
    };
    requestAnimationFrame(check);
  };
  document.addEventListener('mousedown', start, {capture: true, once: true});
}"""


def train_run(server: ServerProcess) -> int:
    with open(DEMO_CSV, "rb") as f:
        response = server.api.post("/datasets", files={"file": ("demo.csv", f, "text/csv")})
    response.raise_for_status()
    dataset_id = response.json()["id"]
    body = {
        "dataset_id": dataset_id,
        "target_columns": ["HV"],
        "feature_columns": DESCRIPTORS,
        "model": "kan",
        "hidden": [16, 16],
        "steps": 10,
        "seed": 0,
    }
    response = server.api.post("/runs", json=body)
    response.raise_for_status()
    run_id = response.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run = server.api.get(f"/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            if run["status"] != "succeeded":
                raise RuntimeError(f"training failed: {run.get('error')}")
            return run_id
        time.sleep(0.5)
    raise TimeoutError("training did not finish")


FORMULA_SHOWN_JS = """() => {
  const block = document.querySelector('#run-formula');
  if (!block) return false;
  if (block.querySelector('.alert')) return true;  // no formula, and the page says why
  const math = block.querySelector('.formula-math');
  return !!(math && (math.querySelector('mjx-container') || math.querySelector('pre')));
}"""

TRAIN_POINTS_JS = """() => {
  const gd = document.querySelector('#tr-loss .js-plotly-plot');
  const t = gd && gd.data && gd.data.find(d => d.name === 'train loss');
  return t && t.x ? t.x.length : 0;
}"""


def measure_train_page(browser, server: ServerProcess) -> dict[str, float]:
    """Train click → first loss point (300 steps, no early stop), reload → reattached run."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(120_000)
    page.goto(server.url + "/")
    page.wait_for_function(
        "() => document.querySelectorAll('#ds-features input:checked').length > 0"
    )
    page.click("#ds-to-train")
    page.wait_for_selector("#tr-selection .kv")
    out: dict[str, float] = {}
    for steps, key in ((300, "train_click_to_first_point_ms"), (200_000, None)):
        page.fill("#tr-steps", str(steps))
        page.fill("#tr-patience", "")
        page.press("#tr-patience", "Tab")
        page.wait_for_timeout(300)  # the debounced inputs commit
        t0 = time.perf_counter()
        page.click("#tr-start")
        page.wait_for_function(f"() => ({TRAIN_POINTS_JS})() > 0")
        if key:
            out[key] = round((time.perf_counter() - t0) * 1000, 1)
            page.wait_for_function(
                "() => ['succeeded', 'failed'].includes("
                "(document.querySelector('#tr-status-badge') || {}).innerText)"
            )
    run_id = int(page.inner_text("#tr-run-id"))
    t0 = time.perf_counter()
    page.reload()
    page.wait_for_function(
        f"""() => (document.querySelector('#tr-run-id') || {{}}).innerText === '{run_id}'
                  && ({TRAIN_POINTS_JS})() > 0"""
    )
    out["reload_to_reattached_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    server.api.post(f"/runs/{run_id}/cancel")
    page.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=21)
    parser.add_argument("--renders", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--repo",
        type=Path,
        default=REPO,
        help="the checkout to serve (default: this one)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the server (default: torch's own choice)",
    )
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="kanscope-bench-") as tmp:
        extra = {"OMP_NUM_THREADS": str(args.torch_threads)} if args.torch_threads else {}
        repo = args.repo.resolve()
        server = ServerProcess(Path(tmp), extra, cwd=repo)
        results["repo"] = str(repo)
        results["server_torch_threads"] = args.torch_threads or "default"
        try:
            server.wait_healthy()
            run_id = train_run(server)
            t0 = time.perf_counter()
            network = server.api.get(f"/runs/{run_id}/network").json()
            results["api_network_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            width = figures.network_width(network)
            n_edges = sum(a * b for a, b in zip(width, width[1:], strict=False))
            results["width"] = width
            results["edges"] = n_edges
            t0 = time.perf_counter()
            fig = figures.network_figure(network)
            results["python_build_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            figure_json = json.loads(fig.to_json())
            results["traces"] = len(figure_json["data"])
            results["figure_json_kb"] = round(len(fig.to_json()) / 1024, 1)

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                plotly_js = Path(plotly.__file__).parent / "package_data"
                page.set_content("<html><body></body></html>")
                page.add_script_tag(path=str(plotly_js / "plotly.min.js"))
                renders = [
                    page.evaluate(RENDER_JS, [figure_json, None]) for _ in range(args.renders)
                ]
                results["render_first_ms"] = round(renders[0], 1)
                results["render_median_ms"] = round(statistics.median(renders), 1)
                results["render_all_ms"] = [round(r, 1) for r in renders]

                page = browser.new_page(viewport=VIEWPORT)
                t0 = time.perf_counter()
                page.goto(f"{server.url}/runs/{run_id}")
                wait_for_trace(page, "run-network", "edges", timeout_ms=60_000)
                results["app_open_to_diagram_ms"] = round((time.perf_counter() - t0) * 1000, 1)
                page.wait_for_function(FORMULA_SHOWN_JS, timeout=300_000)
                results["app_open_to_formula_ms"] = round((time.perf_counter() - t0) * 1000, 1)
                page.wait_for_timeout(1000)

                count = edge_position(page, "run-network", 0)["count"]
                step = max(1, count // args.clicks)
                previews, fulls, candidates = [], [], []
                for k in range(args.clicks):
                    index = (k * step + 7) % count
                    pos = hover_edge(page, "run-network", index)
                    layer, i, j = pos["address"]
                    page.evaluate(ARM_CLICK_JS, f"φ[{layer}] {i}→{j}")
                    page.mouse.click(pos["x"], pos["y"])
                    page.wait_for_function("() => window.__full !== undefined", timeout=20_000)
                    previews.append(page.evaluate("() => window.__preview"))
                    fulls.append(page.evaluate("() => window.__full"))
                    # a user reads the candidates before the next click: let them arrive
                    page.wait_for_selector(
                        "#run-candidates td[data-dash-column=name]", timeout=60_000
                    )
                    candidates.append(
                        page.evaluate("() => performance.now() - window.__clickStart")
                    )
                    page.wait_for_timeout(400)  # two clicks < 300 ms apart are a double-click
                # a typeset formula adds ~1 node per LaTeX character, and every click pays for them
                results["page_dom_nodes"] = page.evaluate(
                    "() => document.getElementsByTagName('*').length"
                )
                for key, values in (
                    ("click_to_curve", previews),
                    ("click_to_full_detail", fulls),
                    ("click_to_candidates", candidates),
                ):
                    ok = sorted(v for v in values if v is not None and v >= 0)
                    results[f"{key}_median_ms"] = round(statistics.median(ok), 1)
                    results[f"{key}_p90_ms"] = round(ok[int(0.9 * (len(ok) - 1))], 1)
                    results[f"{key}_all_ms"] = [None if v is None else round(v, 1) for v in values]
                results.update(measure_train_page(browser, server))
                browser.close()
        finally:
            server.stop()

    results["load_average_1min"] = round(os.getloadavg()[0], 2)
    results["cpu_count"] = os.cpu_count()
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
