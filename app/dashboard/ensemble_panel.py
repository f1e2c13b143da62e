"""The run page's ensemble card (ensemble runs only): which model the page shows, the
interval's calibration and coverage, and formula stability on demand (a button: it fits the
function library to every member's edges)."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, callback, dcc, html, no_update

from app.dashboard import api_client
from app.dashboard.api_client import ApiError
from app.dashboard.components import data_table, error_alert
from app.dashboard.ensemble_figures import ensemble_summary_text
from app.dashboard.figures import edge_label
from app.dashboard.validation import positive_int

HIDDEN = {"display": "none"}


def panel() -> html.Div:
    return html.Div(
        id="run-ensemble",
        className="card",
        style=HIDDEN,
        children=[
            html.H3("Ensemble"),
            html.Div(id="run-ensemble-summary"),
            html.Div(
                className="actions",
                children=[html.Button("Formula stability", id="run-ensemble-stability")],
            ),
            html.Div(
                "How many members give each edge the same best symbolic form (computed on "
                "demand: it fits the function library to every member's edges).",
                className="muted small",
            ),
            dcc.Loading(html.Div(id="run-ensemble-stability-out"), type="dot"),
        ],
    )


@callback(
    Output("run-ensemble", "style"),
    Output("run-ensemble-summary", "children"),
    Input("run-info", "data"),
    Input("run-version", "data"),  # an edit or a reset: whether the interval is current
    State("run-id", "data"),
)
def show_ensemble(info: Any, _version: Any, run_id: Any):
    run_id = positive_int(run_id)
    if not isinstance(info, dict) or info.get("status") != "succeeded" or run_id is None:
        return HIDDEN, None
    if info.get("model") != "kan":
        return HIDDEN, None
    try:
        run = api_client.get_run(run_id)
    except ApiError:
        return HIDDEN, None
    lines = ensemble_summary_text(run.get("summary") or {}, edited=bool(run.get("edited")))
    if not lines:
        return HIDDEN, None
    return {}, [html.P(line, className="ensemble-note") for line in lines]


def stability_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows, least agreement first."""
    n = result.get("members") or 0
    rows = []
    for e in result.get("edges") or []:
        rows.append(
            {
                "edge": edge_label(int(e["layer"]), int(e["i"]), int(e["j"])),
                "form": e.get("top") or "—",
                "agree": f"{e.get('agree')} / {n}",
                "members": ", ".join(b or "—" for b in e.get("best") or []),
                "_share": e.get("share") or 0.0,
            }
        )
    rows.sort(key=lambda r: r["_share"])
    return [{k: v for k, v in r.items() if k != "_share"} for r in rows]


@callback(
    Output("run-ensemble-stability-out", "children"),
    Input("run-ensemble-stability", "n_clicks"),
    State("run-id", "data"),
    prevent_initial_call=True,
    running=[(Output("run-ensemble-stability", "disabled"), True, False)],
)
def show_stability(clicks: Any, run_id: Any):
    run_id = positive_int(run_id)
    if not clicks or run_id is None:
        return no_update
    try:
        result = api_client.ensemble_stability(run_id)
    except ApiError as exc:
        return error_alert(exc, "Formula stability")
    rows = stability_rows(result)
    columns = [
        {"name": "edge", "id": "edge"},
        {"name": "most common form", "id": "form"},
        {"name": "members agreeing", "id": "agree"},
        {"name": "each member's best", "id": "members"},
    ]
    return data_table(
        id="run-ensemble-stability-table",
        data=rows,
        columns=columns,
        page_size=15,
        style_cell={"textAlign": "left", "fontSize": "13px"},
    )
