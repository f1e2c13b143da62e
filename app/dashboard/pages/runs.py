"""Runs: every run with status, dataset, model, parameters and metrics; pick some to compare."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from app.dashboard import api_client
from app.dashboard.api_client import ApiError
from app.dashboard.components import (
    TERMINAL_STATUSES,
    alert,
    data_table,
    error_alert,
    fmt_number,
    user_clicked,
)
from app.dashboard.data_check import readable_name
from app.dashboard.messages import rows_used, settings_text, shorten
from app.dashboard.validation import positive_ints

dash.register_page(__name__, path="/runs", name="Runs", title="Runs · kanscope")

REFRESH_MS = 2000
#: most runs one click may delete
MAX_SELECTED = 1000
#: most runs one comparison shows
MAX_COMPARED = 5

COLUMNS = [
    ("run", "run", "markdown"),
    ("name", "name", "text"),
    ("status", "status", "text"),
    ("edited", "edited", "text"),
    ("dataset", "dataset", "text"),
    ("target", "target", "text"),
    ("features", "features", "text"),
    ("rows", "rows used", "text"),
    ("model", "model", "text"),
    ("width", "width", "text"),
    ("settings", "steps · lr · stop", "text"),
    ("params", "parameters", "text"),
    ("train_loss", "train loss", "text"),
    ("val_loss", "val loss", "text"),
    ("val_metric", "val R² / acc.", "text"),
    ("created", "created", "text"),
    ("problem", "failure / note", "text"),
]


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Runs"),
            dcc.Interval(id="runs-interval", interval=REFRESH_MS),
            html.Div(
                className="card",
                children=[
                    html.Div(
                        className="actions",
                        children=[
                            html.Button("Compare selected", id="runs-compare"),
                            html.Button("Delete selected", id="runs-delete", className="secondary"),
                            html.Span(
                                "Tick two to five runs to compare their settings, curves "
                                "and formulas side by side. Type in the row under the "
                                "headers to filter (e.g. succeeded, kan).",
                                className="muted small",
                            ),
                        ],
                    ),
                    html.Div(id="runs-alert"),
                    data_table(
                        id="runs-table",
                        columns=[
                            {"name": label, "id": key, "presentation": kind}
                            if kind == "markdown"
                            else {"name": label, "id": key}
                            for key, label, kind in COLUMNS
                        ],
                        data=[],
                        row_selectable="multi",
                        selected_row_ids=[],
                        sort_action="native",
                        filter_action="native",
                        # case-insensitive filters without the per-column case toggle
                        filter_options={"case": "insensitive", "placeholder_text": ""},
                        page_size=25,
                        markdown_options={"link_target": "_self"},
                        style_table={"overflowX": "auto"},
                        style_cell={"fontSize": 13, "padding": "4px 8px", "textAlign": "left"},
                        style_header={"fontWeight": 600},
                        style_data_conditional=[
                            {
                                "if": {
                                    "filter_query": '{status} = "failed"',
                                    "column_id": "status",
                                },
                                "color": "#b42318",
                            },
                            {
                                "if": {
                                    "filter_query": '{status} = "running"',
                                    "column_id": "status",
                                },
                                "color": "#1d4ed8",
                            },
                            {  # a badge: the model was changed after training
                                "if": {
                                    "filter_query": '{edited} = "edited"',
                                    "column_id": "edited",
                                },
                                "backgroundColor": "#fef0c7",
                                "color": "#9a6700",
                                "fontWeight": 600,
                            },
                        ],
                    ),
                ],
            ),
        ]
    )


def run_row(run: dict[str, Any], dataset_names: dict[int, str]) -> dict[str, Any]:
    summary = run.get("summary") or {}
    config = run.get("config") or {}
    width = summary.get("width")
    if not width:
        hidden = config.get("hidden")
        width = f"[…, {', '.join(str(h) for h in hidden)}, …]" if hidden else ""
    return {
        "id": run["id"],
        "run": f"[{run['id']}](/runs/{run['id']})",
        "name": run.get("name") or "",
        "status": run.get("status"),
        "edited": "edited" if run.get("edited") else "",
        "dataset": dataset_names.get(run["dataset_id"], str(run["dataset_id"])),
        "target": readable_name(", ".join(config.get("target_columns") or [])),
        "features": len(summary.get("inputs") or config.get("feature_columns") or []) or "",
        "rows": rows_used(summary),
        "model": run.get("model"),
        "width": str(width),
        "settings": settings_text(config),
        "params": fmt_number(summary.get("n_parameters")),
        "train_loss": fmt_number(summary.get("train_loss")),
        "val_loss": fmt_number(summary.get("val_loss")),
        "val_metric": fmt_number(summary.get("val_metric")),
        "created": str(run.get("created_at", ""))[:19].replace("T", " "),
        "problem": shorten(str(run.get("error") or ""), 120),
    }


def fetch_runs() -> list[dict[str, Any]]:
    return api_client.list_runs()


def dataset_names() -> dict[int, str]:
    try:
        datasets = api_client.list_datasets()
    except ApiError:
        return {}
    return {d["id"]: d["name"] for d in datasets}


@callback(
    Output("runs-table", "data"),
    Output("runs-interval", "disabled"),
    Output("runs-alert", "children", allow_duplicate=True),
    Input("runs-interval", "n_intervals"),
    prevent_initial_call="initial_duplicate",
)
def refresh_runs(_n):
    try:
        runs = fetch_runs()
    except ApiError as exc:
        return no_update, True, error_alert(exc, "Listing runs")
    names = dataset_names()
    active = any(r.get("status") not in TERMINAL_STATUSES for r in runs)
    # Keep polling only while something can still change; selection survives (row ids).
    return [run_row(r, names) for r in runs], not active, None


@callback(
    Output("nav-location", "href", allow_duplicate=True),
    Output("runs-alert", "children", allow_duplicate=True),
    Input("runs-compare", "n_clicks"),
    State("runs-table", "selected_row_ids"),
    prevent_initial_call=True,
)
def compare_selected(_clicks, selected):
    if not user_clicked():
        return no_update, no_update
    selected = sorted(positive_ints(selected or [], MAX_SELECTED) or [])
    if not 2 <= len(selected) <= MAX_COMPARED:
        return no_update, alert(
            f"Tick two to five runs to compare ({len(selected)} ticked).", "warning"
        )
    return f"/compare?runs={','.join(str(s) for s in selected)}", None


@callback(
    Output("runs-alert", "children", allow_duplicate=True),
    Output("runs-interval", "disabled", allow_duplicate=True),
    Output("runs-table", "selected_row_ids"),
    Output("runs-interval", "n_intervals"),
    Input("runs-delete", "n_clicks"),
    State("runs-table", "selected_row_ids"),
    prevent_initial_call=True,
)
def delete_selected(_clicks, selected):
    if not user_clicked():
        return no_update, no_update, no_update, no_update
    selected = positive_ints(selected or [], MAX_SELECTED)
    if not selected:
        return alert("Tick the runs to delete.", "warning"), no_update, no_update, no_update
    failures = []
    for run_id in selected:
        try:
            api_client.delete_run(run_id)
        except ApiError as exc:
            failures.append(f"run {run_id}: {exc}")
    message = (
        alert("; ".join(failures), "danger")
        if failures
        else alert(f"Deleted {len(selected)} run(s).", "success", role="status")
    )
    # Resetting n_intervals triggers one refresh of the table.
    return message, False, [], 0
