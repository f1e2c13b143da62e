"""Design: propose alloy compositions for a trained run (KAN or MLP on a composition dataset) —
choose the run, the direction (maximise / minimise / hit a value), the elements and their bounds,
at least k elements, a budget, the trust region (how far a candidate may be from the nearest
training alloy), the input guard (how far beyond its training range a model input may go) and,
for an ensemble run, the ranking (mean, the interval's optimistic end or the expected
improvement over the best training alloy); the search runs in the background (a
``design`` run), its progress is polled, then the ranked candidates (on an ensemble run with their
interval and expected improvement) are listed and drawn against the training alloys, with a CSV
download."""

from __future__ import annotations

import re
from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from app.dashboard import api_client
from app.dashboard.api_client import ApiError
from app.dashboard.components import alert, data_table, field
from app.dashboard.design_figures import design_candidates_figure
from app.dashboard.validation import positive_int

dash.register_page(__name__, path="/design", name="Design", title="Design · kanscope")

FINISHED = ("succeeded", "failed", "cancelled")
#: the API's default trust region (kan_core.design.DEFAULT_MAX_DISTANCE; the page talks to the
#: API only, so the number is repeated here and checked by a test)
DEFAULT_MAX_DISTANCE = 0.15
TRUST_HELP = (
    "Trust region: every candidate stays at most this far from a training alloy (the fraction of "
    "atoms that differ, ½·Σ|x − y|). Far from the data a model's prediction is extrapolation: "
    "without a limit the search finds compositions predicted to be 2–100× better than any alloy "
    "ever measured, 30 % or more of atoms away from all of them. 0.15 is between the 75th and "
    "90th percentile of how far the shipped HEA sets' alloys are from their nearest neighbour "
    "(0.1 and 0.2). Empty: no limit."
)
#: the API's default input guard (kan_core.design.DEFAULT_INPUT_MARGIN, checked by a test)
DEFAULT_INPUT_MARGIN = 0.1
MARGIN_HELP = (
    "Input guard: every model input that follows from the composition (element fractions, "
    "descriptors such as Ω) must stay within its training range widened by this fraction of the "
    "range on each side; compositions beyond it are not ranked. A composition close to a "
    "training alloy can still have a descriptor far outside the data (Ω = Tm·ΔSmix/|ΔHmix| "
    "explodes where ΔHmix ≈ 0), where the prediction — and an ensemble's interval — means "
    "nothing. 0.1 = 10 % of the range. Empty: no guard (such inputs are only flagged)."
)
ACQUISITION_HELP = (
    "Ensemble runs only: 'upper confidence bound' ranks by the optimistic end of the calibrated "
    "interval (upper when maximising, lower when minimising); 'expected improvement' by how much "
    "a candidate is expected to beat the best training alloy, counting only the gain (the mean "
    "and the calibrated spread as a normal distribution) — both propose candidates worth "
    "measuring where the model is unsure, for an active-learning loop; 'mean' ranks by the "
    "members' mean."
)
ACQUISITIONS = ("mean", "ucb", "ei")
#: the table's columns; an ensemble design adds INTERVAL_COLUMNS
BASE_COLUMNS = [
    {"name": "rank", "id": "rank"},
    {"name": "composition", "id": "formula"},
    {"name": "predicted", "id": "predicted"},
    {"name": "distance to nearest training alloy", "id": "distance"},
    {"name": "nearest training alloy", "id": "nearest"},
    {"name": "its measured value", "id": "nearest_value"},
]
_BOUND = re.compile(r"^\s*([A-Z][a-z]?)\s*[:=]?\s*([0-9.]+)\s*(?:-|–|\.\.|to)\s*([0-9.]+)\s*$")


def parse_elements(text: str | None) -> list[str]:
    """``"Al, Co Cr"`` → ``["Al", "Co", "Cr"]`` (the API checks the symbols)."""
    return [p for p in re.split(r"[,\s;]+", text or "") if p]


def parse_bounds(text: str | None) -> dict[str, list[float]]:
    """``"Al 0-0.2, Ni 0.1-0.5"`` → ``{"Al": [0, 0.2], "Ni": [0.1, 0.5]}``; ``ValueError``
    naming the part it cannot read."""
    bounds: dict[str, list[float]] = {}
    for part in re.split(r"[,;\n]+", text or ""):
        if not part.strip():
            continue
        match = _BOUND.match(part)
        if match is None:
            raise ValueError(f"Cannot read bound {part.strip()!r}; write e.g. 'Al 0-0.2'.")
        bounds[match.group(1)] = [float(match.group(2)), float(match.group(3))]
    return bounds


def run_options() -> tuple[list[dict[str, Any]], str | None]:
    """Succeeded KAN / MLP regression runs (what a design can use)."""
    try:
        runs = api_client.list_runs()
    except ApiError as exc:
        return [], str(exc)
    options = [
        {
            "label": f"#{r['id']} {r.get('name') or ''} · {r['model']} → "
            f"{', '.join(r['config'].get('target_columns') or [])}",
            "value": r["id"],
        }
        for r in runs
        if r.get("model") in ("kan", "mlp")
        and r.get("status") == "succeeded"
        and r.get("task") == "regression"
        and not (r.get("config") or {}).get("cv")
    ]
    return options, None


def layout(run: str | None = None, **_: Any) -> html.Div:
    options, error = run_options()
    chosen = positive_int(run) if run else None
    return html.Div(
        [
            html.H2("Design alloys"),
            html.P(
                "Propose compositions that maximise, minimise or hit a value of a trained run's "
                "prediction, with the hea-bench descriptors computed for every trial "
                "composition. Predictions far from the training alloys are extrapolation: "
                "the plot shows how far each candidate is from its nearest training alloy.",
                className="muted",
            ),
            html.Div(
                className="card",
                children=[
                    field(
                        "Run (KAN or MLP on a composition dataset)",
                        dcc.Dropdown(
                            id="dz-run",
                            options=options,
                            value=chosen if chosen in {o["value"] for o in options} else None,
                            placeholder="Choose a trained run…",
                        ),
                    ),
                    alert(f"Could not list runs: {error}") if error else None,
                    field(
                        "Goal",
                        dcc.RadioItems(
                            id="dz-direction",
                            options=[
                                {"label": " maximise", "value": "max"},
                                {"label": " minimise", "value": "min"},
                                {"label": " hit a value", "value": "target"},
                            ],
                            value="max",
                            inline=True,
                        ),
                    ),
                    html.Div(
                        className="row",
                        children=[
                            html.Div(
                                field(
                                    "Elements",
                                    dcc.Input(
                                        id="dz-elements", type="text", value="Al Co Cr Fe Ni"
                                    ),
                                ),
                                className="col",
                            ),
                            html.Div(
                                field(
                                    "Bounds (mole fractions; others 0–1)",
                                    dcc.Input(
                                        id="dz-bounds",
                                        type="text",
                                        placeholder="Al 0-0.2, Ni 0.1-0.5",
                                    ),
                                ),
                                className="col",
                            ),
                        ],
                    ),
                    html.Div(
                        className="form-grid",
                        children=[
                            field(
                                "Target value",
                                dcc.Input(id="dz-target", type="number", disabled=True),
                                "The value to hit (goal 'hit a value').",
                            ),
                            field(
                                "At least k elements",
                                dcc.Input(id="dz-k", type="number", value=3, min=1, step=1),
                                "Each candidate has at least k elements at 5 at.% or more.",
                            ),
                            field(
                                "Max distance to a training alloy",
                                dcc.Input(
                                    id="dz-max-distance",
                                    type="number",
                                    value=DEFAULT_MAX_DISTANCE,
                                    min=0.01,
                                    max=1,
                                    step=0.01,
                                ),
                                "The fraction of atoms that differ from the nearest training "
                                "alloy; empty: no limit (see below).",
                            ),
                            field(
                                "Input margin",
                                dcc.Input(
                                    id="dz-input-margin",
                                    type="number",
                                    value=DEFAULT_INPUT_MARGIN,
                                    min=0,
                                    max=10,
                                    step=0.05,
                                ),
                                MARGIN_HELP,
                            ),
                            field(
                                "Budget (evaluations)",
                                dcc.Input(
                                    id="dz-budget", type="number", value=1000, min=20, step=10
                                ),
                                "Model evaluations the search may spend.",
                            ),
                            field(
                                "Candidates",
                                dcc.Input(
                                    id="dz-n", type="number", value=20, min=1, max=100, step=1
                                ),
                                "How many ranked candidates to return.",
                            ),
                        ],
                    ),
                    html.P(TRUST_HELP, className="muted small", id="dz-trust-help"),
                    field(
                        "Rank by (ensemble runs)",
                        dcc.RadioItems(
                            id="dz-acquisition",
                            options=[
                                {"label": " mean", "value": "mean"},
                                {"label": " upper confidence bound", "value": "ucb"},
                                {"label": " expected improvement", "value": "ei"},
                            ],
                            value="mean",
                            inline=True,
                        ),
                        ACQUISITION_HELP,
                    ),
                    html.Button("Start design", id="dz-start", className="primary"),
                    html.Div(id="dz-start-alert"),
                ],
            ),
            dcc.Store(id="dz-active", storage_type="session"),
            dcc.Interval(id="dz-poll", interval=700, disabled=True),
            html.Div(
                id="dz-card",
                className="card",
                children=[
                    html.Div(
                        [html.Span("Status: "), html.Span(id="dz-status")], className="dz-line"
                    ),
                    html.Div(id="dz-progress"),
                    html.Div(id="dz-notes"),
                    html.A("Download candidates (CSV)", id="dz-csv", href="", hidden=True),
                    data_table(
                        id="dz-table",
                        columns=BASE_COLUMNS,
                        data=[],
                        page_size=20,
                        style_cell={"textAlign": "left", "fontSize": "0.9em"},
                    ),
                    dcc.Graph(id="dz-figure", style={"display": "none"}),
                ],
            ),
        ]
    )


@callback(Output("dz-target", "disabled"), Input("dz-direction", "value"))
def target_only_to_hit(direction: Any) -> bool:
    """The target value is asked for only when the goal is to hit one."""
    return direction != "target"


@callback(
    Output("dz-active", "data"),
    Output("dz-start-alert", "children"),
    Input("dz-start", "n_clicks"),
    State("dz-run", "value"),
    State("dz-direction", "value"),
    State("dz-target", "value"),
    State("dz-elements", "value"),
    State("dz-bounds", "value"),
    State("dz-k", "value"),
    State("dz-budget", "value"),
    State("dz-n", "value"),
    State("dz-max-distance", "value"),
    State("dz-input-margin", "value"),
    State("dz-acquisition", "value"),
    prevent_initial_call=True,
)
def start(
    _n,
    run_id,
    direction,
    target,
    elements,
    bounds,
    k,
    budget,
    n,
    max_distance,
    input_margin,
    acquisition,
) -> tuple[Any, Any]:
    run_id = positive_int(run_id)
    if run_id is None:
        return no_update, alert("Choose a trained run first.", "warning")
    try:
        body: dict[str, Any] = {
            "elements": parse_elements(elements),
            "bounds": parse_bounds(bounds) or None,
            "direction": direction if direction in ("max", "min", "target") else "max",
            "min_elements": positive_int(k) or 1,
            "budget": positive_int(budget) or 1000,
            "n_candidates": positive_int(n) or 20,
            # empty = no limit; a bad number goes to the API, whose 422 says what is allowed
            "max_distance": max_distance if isinstance(max_distance, int | float) else None,
            "input_margin": input_margin if isinstance(input_margin, int | float) else None,
            "acquisition": acquisition if acquisition in ACQUISITIONS else "mean",
        }
    except ValueError as exc:
        return no_update, alert(str(exc), "warning")
    if body["direction"] == "target":
        if not isinstance(target, int | float):
            return no_update, alert("Give the target value to hit.", "warning")
        body["target"] = float(target)
    try:
        started = api_client.start_design(run_id, body)
    except ApiError as exc:
        return no_update, alert(str(exc), "danger")
    return started["id"], None


@callback(
    Output("dz-poll", "disabled"),
    Input("dz-active", "data"),
)
def watch(active: Any) -> bool:
    return positive_int(active) is None


def _columns(result: dict[str, Any]) -> list[dict[str, str]]:
    """The table's columns: with an interval (an ensemble design) its lower and upper ends at
    the run's level and each candidate's expected improvement, after the prediction."""
    cands = result.get("candidates") or []
    if not any(c.get("lower") is not None for c in cands):
        return BASE_COLUMNS
    level = result.get("interval_level")
    pct = f"{round(100 * level)} %" if isinstance(level, int | float) else ""
    if result.get("interval_of") == "trained members":  # an edited run: not its current model
        pct = ", ".join(p for p in (pct, "trained members") if p)
    pct = f" ({pct})" if pct else ""
    extra = [
        {"name": f"lower{pct}", "id": "lower"},
        {"name": f"upper{pct}", "id": "upper"},
        {"name": "expected improvement", "id": "expected_improvement"},
    ]
    return BASE_COLUMNS[:3] + extra + BASE_COLUMNS[3:]


def _interval(result: dict[str, Any]) -> str:
    """What the interval is, for the summary line ("" without one)."""
    level = result.get("interval_level")
    if not level:
        return ""
    if result.get("interval_of") == "trained members":
        return (
            f"; predictions and intervals at {round(100 * level)} % from the ensemble's members "
            "as trained, not the edited model"
        )
    return f"; intervals at {round(100 * level)} % (ensemble)"


def _ranking(result: dict[str, Any]) -> str:
    """How the candidates are ranked, for the summary line ("" for the mean)."""
    acquisition = result.get("acquisition")
    if acquisition == "ucb":
        return ", ranked by the upper confidence bound (the interval's optimistic end)"
    if acquisition == "ei":
        best = result.get("best_training_value")
        over = f" (measured {best:g})" if isinstance(best, int | float) else ""
        return f", ranked by expected improvement over the best training alloy{over}"
    return ""


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    def num(v: Any) -> Any:
        return round(v, 4) if isinstance(v, int | float) else "–"

    return [
        {
            "rank": c["rank"],
            "formula": c["formula"],
            "predicted": num(c.get("predicted")),
            "lower": num(c.get("lower")),
            "upper": num(c.get("upper")),
            "expected_improvement": num(c.get("expected_improvement")),
            "distance": num(c.get("nearest_distance")),
            "nearest": c.get("nearest_training") or "–",
            "nearest_value": num(c.get("nearest_training_value")),
        }
        for c in result.get("candidates") or []
    ]


@callback(
    Output("dz-status", "children"),
    Output("dz-progress", "children"),
    Output("dz-notes", "children"),
    Output("dz-table", "data"),
    Output("dz-table", "columns"),
    Output("dz-figure", "figure"),
    Output("dz-figure", "style"),
    Output("dz-csv", "href"),
    Output("dz-csv", "hidden"),
    Output("dz-poll", "disabled", allow_duplicate=True),
    Input("dz-poll", "n_intervals"),
    Input("dz-active", "data"),
    prevent_initial_call="initial_duplicate",
)
def poll(_n: Any, active: Any) -> tuple[Any, ...]:
    run_id = positive_int(active)
    hidden = {"display": "none"}
    if run_id is None:
        return "–", None, None, [], no_update, no_update, hidden, "", True, True
    try:
        view = api_client.get_design(run_id)
    except ApiError as exc:
        return "unknown", alert(str(exc)), None, [], no_update, no_update, hidden, "", True, True
    status = view["status"]
    progress = view.get("progress") or {}
    text = (
        f"Design run #{run_id}: {round(100 * float(progress.get('fraction') or 0))} % of the budget"
    )
    if status not in FINISHED:
        return status, text, None, [], no_update, no_update, hidden, "", True, False
    result = view.get("result")
    if not result:
        return (
            status,
            text,
            alert(view.get("error") or "No result."),
            [],
            no_update,
            no_update,
            hidden,
            "",
            True,
            True,
        )
    notes = [html.P(n, className="muted") for n in result.get("notes") or []]
    trust = result.get("max_distance")
    margin = result.get("input_margin")
    notes.insert(
        0,
        html.P(
            f"{result['n_evaluations']} compositions evaluated ({result['method']}, "
            f"{result['seconds']:.1f} s); {len(result['candidates'])} candidates"
            + (f", each within {trust:g} of a training alloy" if trust is not None else "")
            + (
                f", model inputs within their training range ± {margin:g} of it"
                if isinstance(margin, int | float)
                else ""
            )
            + _interval(result)
            + _ranking(result)
            + "."
        ),
    )
    return (
        status,
        text,
        notes,
        _rows(result),
        _columns(result),
        design_candidates_figure(result),
        {},
        api_client.design_csv_href(run_id),
        False,
        True,
    )
