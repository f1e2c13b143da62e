"""Leaderboard: KAN, MLP and scikit-learn baselines cross-validated on the same grouped folds.

Per dataset: choose target, features, task, what to group folds by and how many folds; one
"Run leaderboard" click queues one cross-validated run per model through the API
(``POST /datasets/{id}/leaderboards``); the page polls the leaderboard until every run has
finished, showing the table as it fills, then draws predicted vs measured per model.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html, no_update
from dash.dash_table.DataTable import DataTable

from app.dashboard import api_client, figures
from app.dashboard.alloy_components import (
    COMPOSITION,
    NO_GROUPS,
    build_request,
    group_options,
)
from app.dashboard.api_client import ApiError
from app.dashboard.components import (
    alert,
    attrs,
    data_table,
    error_alert,
    field,
    task_radio,
    user_clicked,
)
from app.dashboard.feature_picker import feature_checklist, register_feature_picker
from app.dashboard.forms import initial_selection
from app.dashboard.validation import leaderboard_id, positive_int

dash.register_page(
    __name__, path="/leaderboard", name="Leaderboard", title="Leaderboard · kanscope"
)

POLL_MS = 1000

HELP = {
    "group": "Rows with the same value stay in the same fold, so one alloy is never in both "
    "training and test. 'composition' uses the detected formula or element columns.",
    "folds": "K in K-fold cross-validation: every model is trained K times, each fold once "
    "the test set.",
    "steps": "Most optimiser steps per fold for the KAN and the MLP (they stop early when "
    "their inner validation loss stalls). Fewer steps = a faster, rougher leaderboard.",
    "seed": "The folds and the networks' initialisation follow this seed.",
}


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Leaderboard"),
            html.P(
                "KAN, MLP and scikit-learn baselines trained on the same grouped folds: is the "
                "KAN as good as the usual models before you trust its formula?",
                className="muted",
            ),
            dcc.Store(id="lb-board", data=None),  # {"dataset_id": int, "id": str}
            dcc.Interval(id="lb-interval", interval=POLL_MS, disabled=True),
            html.Div(
                className="card",
                children=[
                    html.Div(
                        className="row",
                        children=[
                            html.Div(
                                field(
                                    "Dataset",
                                    dcc.Dropdown(
                                        id="lb-dataset",
                                        placeholder="Choose a dataset…",
                                        clearable=False,
                                    ),
                                ),
                                className="col",
                            ),
                            html.Div(
                                field(
                                    "Earlier leaderboards",
                                    dcc.Dropdown(id="lb-history", placeholder="none yet"),
                                ),
                                className="col",
                            ),
                        ],
                    ),
                    html.Div(
                        className="form-grid",
                        children=[
                            field(
                                "Target column",
                                dcc.Dropdown(id="lb-target", clearable=False),
                                "The column every model predicts.",
                            ),
                            field("Task", task_radio("lb-task")),
                            field(
                                "Group folds by",
                                dcc.Dropdown(id="lb-group", value=COMPOSITION, clearable=False),
                                HELP["group"],
                            ),
                            field(
                                "Folds (K)",
                                dcc.Input(
                                    id="lb-folds",
                                    type="number",
                                    value=5,
                                    min=2,
                                    max=20,
                                    debounce=True,
                                ),  # fmt: skip
                                HELP["folds"],
                            ),
                            field(
                                "Network steps",
                                dcc.Input(
                                    id="lb-steps",
                                    type="number",
                                    value=2000,
                                    min=1,
                                    max=100_000,
                                    debounce=True,
                                ),  # fmt: skip
                                HELP["steps"],
                            ),
                            field(
                                "Seed",
                                dcc.Input(
                                    id="lb-seed", type="number", value=0, min=0, debounce=True
                                ),
                                HELP["seed"],
                            ),  # fmt: skip
                        ],
                    ),
                    feature_checklist(
                        "lb", "Inputs of every model. Non-numeric columns cannot be features."
                    ),
                    html.Div(
                        className="actions",
                        children=[html.Button("Run leaderboard", id="lb-start")],
                    ),
                    html.Div(id="lb-alert"),
                ],
            ),
            html.Div(
                className="card",
                children=[
                    html.H3("Results"),
                    html.Div(id="lb-progress"),
                    html.Div(id="lb-table", className="scroll-x"),
                    html.Div(
                        id="lb-plots",
                        style={
                            "display": "grid",
                            "gridTemplateColumns": "repeat(auto-fill, minmax(380px, 1fr))",
                            "gap": "8px",
                        },
                    ),
                ],
            ),
        ]
    )


@callback(
    Output("lb-dataset", "options"),
    Output("lb-dataset", "value"),
    Input("lb-dataset", "id"),
    State("selection-store", "data"),
)
def list_datasets(_id: str, selection: dict | None):
    try:
        datasets = api_client.list_datasets()
    except ApiError as exc:
        return [{"label": f"(could not list datasets: {exc})", "value": -1, "disabled": True}], None
    options = [
        {"label": f"{d['name']} — {d['n_rows']:,} rows × {d['n_columns']} cols", "value": d["id"]}
        for d in datasets
    ]
    ids = [d["id"] for d in datasets]
    remembered = (selection or {}).get("dataset_id")
    if remembered in ids:
        return options, remembered
    return options, (max(ids) if ids else None)


@callback(
    Output("lb-target", "options"),
    Output("lb-target", "value"),
    Output("lb-features", "options"),
    Output("lb-features", "value"),
    Output("lb-task", "value"),
    Output("lb-group", "options"),
    Output("lb-group", "value"),
    Output("lb-history", "options"),
    Output("lb-history", "value"),
    Output("lb-history", "placeholder"),
    Output("lb-alert", "children", allow_duplicate=True),
    Input("lb-dataset", "value"),
    State("selection-store", "data"),
    prevent_initial_call="initial_duplicate",
)
def show_dataset(dataset_id: int | None, selection: dict | None):
    dataset_id = positive_int(dataset_id)
    if dataset_id is None:
        return [], None, [], [], no_update, [], COMPOSITION, [], None, history_placeholder([]), None
    try:
        preview = api_client.dataset_preview(dataset_id, limit=1)
        composition = api_client.dataset_composition(dataset_id)
        boards = api_client.list_leaderboards(dataset_id)
    except ApiError as exc:
        empty: tuple[Any, ...] = (
            [],
            None,
            [],
            [],
            no_update,
            [],
            COMPOSITION,
            [],
            None,
            history_placeholder([]),
        )
        return *empty, error_alert(exc, "Loading the dataset")
    stats = preview.get("stats") or []
    names = [s["name"] for s in stats]
    numeric = [s["name"] for s in stats if s.get("kind") == "numeric"]
    target, features, task = initial_selection(
        stats, selection, dataset_id, int(preview.get("n_rows") or 0)
    )
    detected = composition.get("detected")
    source = (detected.get("formula_column") or "element columns") if detected else None
    groups = group_options(names, source)
    history = history_options(boards)
    return (
        [{"label": n, "value": n} for n in names],
        target,
        [{"label": f" {n}", "value": n, "disabled": n == target} for n in numeric],
        features,
        task,
        groups,
        COMPOSITION if detected else NO_GROUPS,
        history,
        None,
        history_placeholder(history),
        None,
    )


def history_placeholder(options: list[Any]) -> str:
    """What the closed "Earlier leaderboards" list says: how many there are, or none yet."""
    if not options:
        return "none yet"
    return f"open one of {len(options)} earlier leaderboard{'s' if len(options) > 1 else ''}…"


def history_options(boards: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "label": f"{b['id']} · {', '.join(b.get('target_columns') or [])} · "
            f"{b['split'].get('n_splits')} folds · {len(b['runs'])} models",
            "value": b["id"],
        }
        for b in boards
    ]


register_feature_picker("lb")


@callback(
    Output("lb-board", "data"),
    Output("lb-alert", "children"),
    Output("lb-interval", "disabled"),
    Output("lb-table", "children", allow_duplicate=True),
    Output("lb-plots", "children", allow_duplicate=True),
    Output("lb-history", "options", allow_duplicate=True),
    Output("lb-history", "placeholder", allow_duplicate=True),
    Input("lb-start", "n_clicks"),
    State("lb-dataset", "value"),
    State("lb-target", "value"),
    State("lb-features", "value"),
    State("lb-task", "value"),
    State("lb-group", "value"),
    State("lb-folds", "value"),
    State("lb-steps", "value"),
    State("lb-seed", "value"),
    prevent_initial_call=True,
    running=[(Output("lb-start", "disabled"), True, False)],
)
def start_leaderboard(_clicks, dataset_id, target, features, task, group, folds, steps, seed):
    nothing = (no_update,) * 7
    if not user_clicked():
        return nothing
    dataset_id = positive_int(dataset_id)
    if dataset_id is None:
        return no_update, alert("Upload or choose a dataset first.", "warning"), *nothing[2:]
    try:
        body = build_request(target, features, task, group, folds, steps, seed)
    except (TypeError, ValueError) as exc:
        return no_update, alert(str(exc), "warning"), *nothing[2:]
    try:
        created = api_client.create_leaderboard(dataset_id, body)
    except ApiError as exc:
        return no_update, error_alert(exc, "Starting the leaderboard"), *nothing[2:]
    try:
        history = history_options(api_client.list_leaderboards(dataset_id))
        placeholder = history_placeholder(history)
    except ApiError:  # the list is a convenience; the new board is shown anyway
        history = placeholder = no_update
    n = len(created.get("runs") or [])
    message = f"Leaderboard {created['id']} queued: {n} models × {body['split']['n_splits']} folds."
    return (
        {"dataset_id": dataset_id, "id": created["id"]},
        alert(message, "success", role="status"),
        False,
        None,
        None,
        history,
        placeholder,
    )


FORM_IDS = ("lb-target", "lb-features", "lb-task", "lb-group", "lb-folds", "lb-steps", "lb-seed")


@callback(
    Output("lb-board", "data", allow_duplicate=True),
    Output("lb-interval", "disabled", allow_duplicate=True),
    *[Output(i, "value", allow_duplicate=True) for i in FORM_IDS],
    Output("lb-alert", "children", allow_duplicate=True),
    Input("lb-history", "value"),
    State("lb-dataset", "value"),
    State("lb-group", "options"),
    prevent_initial_call=True,
)
def open_earlier(board_id: str | None, dataset_id: int | None, groups: Any = None):
    """Show an earlier leaderboard and set the form to the settings it was run with, so the
    form never describes another board than the one shown."""
    board_id, dataset_id = leaderboard_id(board_id), positive_int(dataset_id)
    if board_id is None or dataset_id is None:
        return (no_update,) * (3 + len(FORM_IDS))
    try:
        boards = api_client.list_leaderboards(dataset_id)
    except ApiError as exc:
        form = (no_update,) * len(FORM_IDS)
        return (
            {"dataset_id": dataset_id, "id": board_id},
            False,
            *form,
            error_alert(exc, "Reading the leaderboard's settings"),
        )
    board = next((b for b in boards if b.get("id") == board_id), None)
    form = board_form(board, groups) if board else (no_update,) * len(FORM_IDS)
    return {"dataset_id": dataset_id, "id": board_id}, False, *form, None


def board_form(board: dict[str, Any], groups: Any) -> tuple[Any, ...]:
    """The form values (``FORM_IDS`` order) a leaderboard was run with."""
    split = board.get("split") or {}
    group = split.get("group_by")
    known = {o.get("value") for o in groups or [] if isinstance(o, dict)}
    group_value = NO_GROUPS if group is None else group
    if group_value not in known:
        group_value = no_update
    return (
        (board.get("target_columns") or [None])[0],
        board.get("feature_columns") or [],
        board.get("task") or "regression",
        group_value,
        split.get("n_splits", no_update),
        network_steps(board),
        split.get("seed", no_update),
    )


def network_steps(board: dict[str, Any]) -> Any:
    """The step limit the board's networks ran with (its KAN's or MLP's config)."""
    for ref in board.get("runs") or []:
        run_id = positive_int(ref.get("run_id") if isinstance(ref, dict) else None)
        if run_id is None:
            continue
        try:
            run = api_client.get_run(run_id)
        except ApiError:
            continue
        if run.get("model") in ("kan", "mlp") and (run.get("config") or {}).get("steps"):
            return run["config"]["steps"]
    return no_update


def results_table(board: dict[str, Any]) -> DataTable:
    data, columns = figures.leaderboard_table(board)
    return data_table(
        id="lb-results",
        data=data,
        columns=columns,
        markdown_options={"link_target": "_self"},
        tooltip_data=[{"status": r["error"]} if r["error"] else {} for r in data],
        style_cell={"fontSize": 13, "padding": "4px 8px", "textAlign": "left"},
        style_header={"fontWeight": 600},
        style_data_conditional=[
            {"if": {"filter_query": "{rank} = 1"}, "fontWeight": 600},
            {"if": {"filter_query": '{status} = "failed"'}, "color": "#c0392b"},
        ],
    )


def progress_box(board: dict[str, Any]) -> html.Div:
    done, total = figures.leaderboard_progress(board)
    split = board.get("split") or {}
    group = split.get("group_by") or "nothing (plain K-fold)"
    text = (
        f"{done} of {total} models finished · {split.get('n_splits')} folds grouped by {group} "
        f"({board.get('n_groups')} groups)"
    )
    children: list[Any] = [
        html.Progress(value=str(done), max=str(max(total, 1)), id="lb-progress-bar"),
        html.Span(text, id="lb-progress-text", className="muted", style={"marginLeft": "10px"}),
    ]
    failed = [r for r in board.get("rows") or [] if r.get("status") == "failed"]
    for row in failed:
        children.append(alert(f"{row['name']} failed: {row.get('error') or 'no reason given'}"))
    return html.Div(children, className="lb-progress")


@callback(
    Output("lb-progress", "children"),
    Output("lb-table", "children"),
    Output("lb-plots", "children"),
    Output("lb-interval", "disabled", allow_duplicate=True),
    Input("lb-interval", "n_intervals"),
    Input("lb-board", "data"),
    prevent_initial_call=True,
)
def poll_leaderboard(_n, board_ref: dict | None):
    if not isinstance(board_ref, dict):
        return no_update, no_update, no_update, True
    dataset_id = positive_int(board_ref.get("dataset_id"))
    board_id = leaderboard_id(board_ref.get("id"))
    if dataset_id is None or board_id is None:
        return no_update, no_update, no_update, True
    try:
        board = api_client.get_leaderboard(dataset_id, board_id, predictions=False)
        if board.get("complete"):
            board = api_client.get_leaderboard(dataset_id, board_id)
    except ApiError as exc:
        return error_alert(exc, "Reading the leaderboard"), no_update, no_update, True
    complete = bool(board.get("complete"))
    plots: Any = no_update
    if complete:
        plots = [
            html.Div(
                dcc.Graph(figure=fig, config={"displaylogo": False}),
                className="lb-plot",
                **attrs({"data-model": name}),
            )
            for name, fig in figures.leaderboard_prediction_figures(board)
        ]
    return progress_box(board), results_table(board), plots, complete
