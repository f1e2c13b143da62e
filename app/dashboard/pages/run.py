"""Run: live loss, the network diagram, edge inspection, symbolic fitting, formula and exports."""

from __future__ import annotations

import csv
import io
from typing import Any

import dash
from dash import (
    ClientsideFunction,
    Input,
    Output,
    State,
    callback,
    clientside_callback,
    ctx,
    dcc,
    html,
    no_update,
)

from app.dashboard import api_client, discovery_panel, ensemble_figures, ensemble_panel, figures
from app.dashboard.api_client import ApiError
from app.dashboard.components import (
    METRIC_LABELS,
    TERMINAL_STATUSES,
    alert,
    data_table,
    decode_upload,
    error_alert,
    field,
    fmt_number,
    formula_math,
    status_badge,
    user_clicked,
)
from app.dashboard.data_check import plural
from app.dashboard.messages import auto_symbolic_text, sampled_rows_note, shorten, ui_words
from app.dashboard.toasts import toast
from app.dashboard.validation import finite_number, index_int, one_of, positive_int, valid_edge

dash.register_page(__name__, path_template="/runs/<run_id>", name="Run", title="Run · kanscope")

POLL_MS = 1000
EXPORTS = (
    ("latex", "LaTeX"),
    ("python", "Python"),
    ("sympy", "sympy"),
    ("model", "Model file"),
    ("predictions", "Predictions CSV"),
)
EXPORT_FALLBACK_NAMES = {
    "latex": "formula.tex",
    "python": "formula.py",
    "sympy": "formula.srepr.txt",
    "model": "model.safetensors",
    "predictions": "predictions.csv",
}
GRAPH_CONFIG: dcc.Graph.Config = {"displaylogo": False, "doubleClick": False, "scrollZoom": False}


def layout(run_id: str | None = None, **_: Any) -> html.Div:
    run_number = positive_int(run_id)
    if run_number is None:
        return html.Div(
            [
                html.H2("Run"),
                alert(
                    [
                        "No such run: ",
                        html.Code(str(run_id)),
                        ". ",
                        dcc.Link("See all runs", href="/runs"),
                    ],
                    "warning",
                ),
            ]
        )
    return html.Div(
        [
            dcc.Store(id="run-id", data=run_number),
            dcc.Store(id="run-info", data=None),  # {"status", "model", "has_model"}
            dcc.Store(id="run-diagram", data=None),  # {"width", "inputs", "slot"}
            dcc.Store(id="run-highlight", data=None),  # written by the client-side outline
            # Every edge's curve for the instant client-side preview on click (browser only).
            dcc.Store(id="run-curves", data=None),
            # the diagram's zoom, kept across the redraws a fix or prune causes
            dcc.Store(id="run-network-zoom", data=None),
            dcc.Store(id="run-version", data=0),  # bumped after every change to the model
            dcc.Store(id="run-selected-edge", data=None),  # [layer, i, j]
            dcc.Store(id="run-edge-data", data=None),
            dcc.Store(id="run-suggestions", data=None),
            dcc.Store(id="run-metrics-state", data={"last_step": None}),
            dcc.Interval(id="run-interval", interval=POLL_MS, disabled=True),
            dcc.Download(id="run-download"),
            html.Div(id="run-header", className="card"),
            html.Details(
                open=True,
                className="card",
                children=[
                    html.Summary(html.Strong("Loss curves")),
                    dcc.Graph(
                        id="run-loss",
                        figure=figures.loss_figure([], uirevision=f"run-{run_number}"),
                        config={"displaylogo": False},
                    ),
                ],
            ),
            html.Div(
                className="row",
                children=[
                    html.Div(
                        className="col-2 card",
                        children=[
                            html.H3("Network"),
                            html.Div(
                                "Click an edge to inspect it. Opacity = attribution; red = "
                                "symbolic; drag to zoom, double-click the zoom tool to reset.",
                                className="network-hint",
                            ),
                            html.Div(id="run-network-alert"),
                            dcc.Graph(
                                id="run-network",
                                figure=figures.message_figure("Loading…"),
                                config=GRAPH_CONFIG,
                            ),
                        ],
                    ),
                    html.Div(
                        className="col card",
                        id="run-edge-panel",
                        children=[
                            html.H3("Edge"),
                            dcc.Graph(
                                id="run-edge",
                                figure=figures.message_figure("Click an edge in the network."),
                                config={"displaylogo": False},
                            ),
                            html.Div(
                                className="actions",
                                children=[
                                    html.Button("Fix selected candidate", id="run-fix"),
                                    html.Button("Unfix", id="run-unfix", className="secondary"),
                                ],
                            ),
                            dcc.Loading(html.Div(id="run-edge-alert"), type="dot"),
                            # Fix / Unfix outcomes: written by that callback only, so the
                            # refresh the edit triggers does not clear them
                            html.Div(id="run-edge-notice"),
                            html.Div(
                                "Symbolic candidates (select one to preview it)",
                                className="muted small",
                            ),
                            dcc.Loading(
                                data_table(
                                    id="run-candidates",
                                    columns=[
                                        {"name": "function", "id": "name"},
                                        {"name": "R²", "id": "r2"},
                                        {"name": "complexity", "id": "complexity"},
                                        {"name": "c·f(a·x+b)+d", "id": "params"},
                                    ],
                                    data=[],
                                    row_selectable="single",
                                    selected_rows=[],
                                    page_size=8,
                                    style_table={"overflowX": "auto"},
                                    style_cell={"fontSize": 12, "padding": "3px 6px"},
                                    style_header={"fontWeight": 600},
                                ),
                                type="dot",
                            ),
                        ],
                    ),
                ],
            ),
            html.Div(
                className="card",
                children=[
                    html.H3("Simplify"),
                    html.Div(
                        className="actions",
                        children=[
                            field(
                                "R² threshold",
                                dcc.Input(
                                    id="run-auto-threshold",
                                    type="number",
                                    value=0.9,
                                    min=0,
                                    max=1,
                                    step=0.01,
                                ),
                                "Auto-symbolic fixes an edge only when its best candidate "
                                "reaches this R²; the others stay splines.",
                            ),
                            html.Button("Auto-symbolic", id="run-auto"),
                            field(
                                "Prune threshold",
                                dcc.Input(
                                    id="run-prune-threshold",
                                    type="number",
                                    value=0.01,
                                    min=0,
                                    step="any",
                                ),
                                "Edges whose attribution is below this are removed.",
                            ),
                            html.Button("Prune", id="run-prune", className="secondary"),
                            field(
                                "Retrain steps",
                                dcc.Input(id="run-retrain-steps", type="number", value=100, min=1),
                                "Retraining creates a new child run that starts from this "
                                "model (fixed symbols keep trainable constants).",
                            ),
                            html.Button("Retrain", id="run-retrain", className="secondary"),
                            html.Button(
                                "Reset edits",
                                id="run-reset",
                                className="secondary",
                                title="Back to the model as trained: drops symbolic fixes and "
                                "pruning.",
                            ),
                        ],
                    ),
                    dcc.Loading(html.Div(id="run-action-alert"), type="dot"),
                ],
            ),
            html.Div(
                className="row",
                children=[
                    html.Div(
                        className="col-2 card",
                        children=[
                            html.H3("Formula"),
                            dcc.Loading(html.Div(id="run-formula", className="formula")),
                            html.Div(
                                className="actions",
                                children=[html.Span("Export:", className="muted")]
                                + [
                                    html.Button(  # enabled once there is something to export
                                        label,
                                        id=f"run-export-{kind}",
                                        className="secondary",
                                        disabled=True,
                                    )
                                    for kind, label in EXPORTS
                                ],
                            ),
                            html.Div(id="run-export-alert"),
                            html.Div(
                                className="actions",
                                children=[
                                    html.Span("Predict new rows:", className="muted"),
                                    dcc.Upload(
                                        id="run-predict-upload",
                                        children=html.Button(
                                            "Upload CSV…",
                                            id="run-predict-button",
                                            className="secondary",
                                        ),
                                        accept=".csv,text/csv",
                                    ),
                                    html.Span(
                                        "a CSV with the run's feature columns; the same rows "
                                        "come back with the prediction and a note per row",
                                        className="muted small",
                                    ),
                                ],
                            ),
                            dcc.Loading(html.Div(id="run-predict-alert"), type="dot"),
                        ],
                    ),
                    html.Div(
                        className="col card",
                        children=[
                            dcc.Loading(
                                dcc.Graph(
                                    id="run-predictions",
                                    figure=figures.message_figure("Predictions appear here."),
                                    config={"displaylogo": False},
                                )
                            )
                        ],
                    ),
                ],
            ),
            ensemble_panel.panel(),
            discovery_panel.panel(discovery_panel.RUN_PAGE),
        ]
    )


# ── header and live loss ──────────────────────────────────────────────────────────────────


def kept_best_step(run: dict[str, Any]) -> int | None:
    """The step whose weights a finished run kept: early stopping restores the best
    validation loss; without it the last step's weights are kept (None)."""
    summary, config = run.get("summary") or {}, run.get("config") or {}
    best = summary.get("best_step")
    if config.get("early_stopping_patience") is None or not isinstance(best, int):
        return None
    return best


def header(
    run: dict[str, Any], metric_name: str | None, dataset_name: str | None = None
) -> list[Any]:
    summary = run.get("summary") or {}
    title = f"Run {run['id']}" + (f" — {run['name']}" if run.get("name") else "")
    items = [
        html.Div([html.Span("status"), status_badge(run.get("status"), "run-status")]),
        html.Div([html.Span("model"), html.Span(str(run.get("model", "")).upper())]),
    ]
    if isinstance(run.get("queue_position"), int):  # queued: 1 = the next to start
        position = f"queued, position {run['queue_position']}"
        items.append(html.Div([html.Span("queue"), html.Span(position, id="run-queue")]))
    badge, badge_style = edited_badge(run.get("edited"))
    items.append(
        html.Div(
            badge,
            id="run-edited",
            style=badge_style,
            title="Changed after training (symbolic fixes, pruning); Reset edits goes back.",
        )
    )
    if summary.get("width"):
        items.append(html.Div([html.Span("width"), html.Span(str(summary["width"]))]))
    if summary.get("n_parameters") is not None:
        items.append(html.Div([html.Span("parameters"), html.Span(f"{summary['n_parameters']:,}")]))
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        if summary.get(key) is not None:
            items.append(html.Div([html.Span(label), html.Span(fmt_number(summary[key]))]))
    if summary.get("val_metric") is not None:
        items.append(
            html.Div(
                [
                    html.Span(
                        f"val {METRIC_LABELS.get(metric_name or '', 'metric')} (as trained)",
                        title="The trained network on the validation rows, before any symbolic "
                        "edit (the predictions plot shows the current model).",
                    ),
                    html.Span(fmt_number(summary["val_metric"]), id="run-val-metric"),
                ]
            )
        )
    if summary.get("stopped_reason"):
        stopped = str(summary["stopped_reason"]).replace("_", " ")
        items.append(html.Div([html.Span("stopped"), html.Span(stopped, id="run-stopped")]))
    best = kept_best_step(run)
    if best is not None:
        items.append(
            html.Div(
                [html.Span("weights kept (best val loss)"), html.Span(f"step {best:,}")],
                id="run-best-step",
            )
        )
    for note in summary.get("notes") or []:  # e.g. resumed from a checkpoint after a lost worker
        items.append(html.Div([html.Span("note"), html.Span(str(note))]))
    items.append(
        html.Div(
            [html.Span("dataset"), dcc.Link(dataset_name or str(run.get("dataset_id")), href="/")]
        )
    )
    if run.get("parent_run_id"):
        parent = run["parent_run_id"]
        items.append(
            html.Div(
                [html.Span("retrained from"), dcc.Link(f"run {parent}", href=f"/runs/{parent}")]
            )
        )
    children: list[Any] = [html.H2(title), html.Div(items, className="kv")]
    if run.get("status") in ("queued", "running"):
        children.append(
            html.Div(
                className="actions",
                children=[html.Button("Cancel run", id="run-cancel", className="danger")],
            )
        )
    else:
        children.append(html.Button(id="run-cancel", style={"display": "none"}))
    if run.get("status") == "queued" and isinstance(run.get("queue_note"), str):
        children.append(alert(run["queue_note"], "warning", role="status"))  # e.g. no worker
    if run.get("error"):
        children.append(alert(run["error"], "danger"))
    return children


def edited_badge(edited: Any) -> tuple[list[Any], dict[str, str] | None]:
    """``(children, style)`` of the header's "model edited" item (hidden when not edited)."""
    if not edited:
        return [], {"display": "none"}
    return [html.Span("model"), html.Span("edited", className="badge badge-edited")], None


def fetch_progress(run_id: int, last_step: int | None, info: dict | None):
    """``(run, new metric points, last_step, run-info)`` for the header and the loss plot."""
    run = api_client.get_run(run_id)
    if not isinstance(last_step, int) or isinstance(last_step, bool) or last_step < -1:
        last_step = None  # a store from the browser: anything else starts from the beginning
    info = info if isinstance(info, dict) else None
    points: list[dict[str, Any]] = []
    metric_name = (info or {}).get("metric_name")
    try:
        metrics = api_client.run_metrics(run_id, after_step=last_step)
    except ApiError:
        metrics = None
    if metrics:
        metric_name = metrics.get("metric_name") or metric_name
        points = metrics.get("points") or []
        if metrics.get("last_step") is not None:
            last_step = metrics["last_step"]
    dataset_name = (info or {}).get("dataset_name")
    if dataset_name is None:
        try:
            dataset_name = api_client.get_dataset(run["dataset_id"])["name"]
        except (ApiError, KeyError):
            dataset_name = str(run.get("dataset_id"))
    new_info = {
        "status": run.get("status"),
        "model": run.get("model"),
        "has_model": bool(run.get("has_model")),
        "metric_name": metric_name,
        "dataset_name": dataset_name,
    }
    return run, points, last_step, new_info


@callback(
    Output("run-header", "children"),
    Output("run-loss", "figure"),
    Output("run-metrics-state", "data"),
    Output("run-interval", "disabled"),
    Output("run-info", "data"),
    Input("run-id", "data"),
)
def load_run(run_id):
    """Everything at once when the page opens; the interval then only adds what is new."""
    run_id = positive_int(run_id)
    if run_id is None:
        return alert("No such run.", "warning"), no_update, no_update, True, no_update
    try:
        run, points, last_step, info = fetch_progress(run_id, None, None)
    except ApiError as exc:
        return error_alert(exc, f"Loading run {run_id}"), no_update, no_update, True, no_update
    done = run.get("status") in TERMINAL_STATUSES
    return (
        header(run, info["metric_name"], info["dataset_name"]),
        figures.loss_figure(
            points,
            uirevision=f"run-{run_id}",
            best_step=kept_best_step(run),
            task=(run.get("config") or {}).get("task"),
        ),
        {"last_step": last_step},
        done,
        info,
    )


@callback(
    Output("run-header", "children", allow_duplicate=True),
    Output("run-loss", "extendData"),
    Output("run-metrics-state", "data", allow_duplicate=True),
    Output("run-interval", "disabled", allow_duplicate=True),
    Output("run-info", "data", allow_duplicate=True),
    Input("run-interval", "n_intervals"),
    State("run-id", "data"),
    State("run-metrics-state", "data"),
    State("run-info", "data"),
    prevent_initial_call=True,
)
def poll_run(n_intervals, run_id, metrics_state, info):
    run_id = positive_int(run_id)
    if not n_intervals or not info or run_id is None or not isinstance(metrics_state, dict | None):
        return no_update, no_update, no_update, no_update, no_update
    try:
        run, points, last_step, new_info = fetch_progress(
            run_id, (metrics_state or {}).get("last_step"), info
        )
    except ApiError as exc:
        return error_alert(exc, f"Loading run {run_id}"), no_update, no_update, False, no_update
    extend = no_update
    if points:
        data, indices = figures.loss_extension(points)
        extend = (data, indices, 1_000_000)
    return (
        header(run, new_info["metric_name"], new_info["dataset_name"]),
        extend,
        {"last_step": last_step},
        run.get("status") in TERMINAL_STATUSES,
        new_info if new_info != info else no_update,
    )


@callback(
    Output("run-edited", "children"),
    Output("run-edited", "style"),
    Input("run-version", "data"),
    State("run-id", "data"),
    prevent_initial_call=True,
)
def redraw_edited_badge(version, run_id):
    """A fix, unfix, auto-symbolic, prune or reset changes whether the model is edited: the
    header's badge follows at once (the poll has stopped on a finished run). Only the badge:
    the rest of the header (its buttons) stays as it is."""
    run_id = positive_int(run_id)
    if not version or run_id is None:
        return no_update, no_update
    try:
        run = api_client.get_run(run_id)
    except ApiError:
        return no_update, no_update  # the badge keeps what it showed; a reload reads it again
    return edited_badge(run.get("edited"))


@callback(
    Output("run-action-alert", "children", allow_duplicate=True),
    Output("run-interval", "disabled", allow_duplicate=True),
    Input("run-cancel", "n_clicks"),
    State("run-id", "data"),
    prevent_initial_call=True,
)
def cancel_run(clicks, run_id):
    run_id = positive_int(run_id)
    if not clicks or not user_clicked() or run_id is None:
        return no_update, no_update
    try:
        api_client.cancel_run(run_id)
    except ApiError as exc:
        return error_alert(exc, "Cancelling"), no_update
    return alert("Cancel requested.", "info", role="status"), False


# ── network diagram and edge inspection ───────────────────────────────────────────────────


def inspectable(info: dict | None) -> bool:
    return bool(
        isinstance(info, dict)
        and info.get("status") == "succeeded"
        and info.get("has_model")
        and info.get("model") == "kan"
    )


@callback(
    Output("run-network", "figure"),
    Output("run-diagram", "data"),
    Output("run-curves", "data"),
    Output("run-network-alert", "children"),
    Input("run-info", "data"),
    Input("run-version", "data"),
    State("run-selected-edge", "data"),
    State("run-id", "data"),
    State("run-network-zoom", "data"),
)
def load_network(info, _version, selected, run_id, zoom=None):
    run_id = positive_int(run_id)
    if not isinstance(info, dict) or not info or run_id is None:
        return no_update, no_update, no_update, no_update
    if info.get("model") == "rbf_subspace" and info.get("status") == "succeeded":
        return feature_ranking_panel(run_id)
    if not inspectable(info):
        status = info.get("status")
        if info.get("model") != "kan" and status == "succeeded":
            text = f"{str(info.get('model')).upper()} runs have no edges to draw; see metrics."
        elif status in ("queued", "running"):
            text = "The network is drawn when training has finished."
        else:
            text = f"No trained model (run {status})."
        return figures.message_figure(text), None, None, None
    try:
        network = api_client.run_network(run_id)
    except ApiError as exc:
        return (
            figures.message_figure("Network unavailable."),
            None,
            None,
            error_alert(exc, "Loading the network"),
        )
    selected = list(valid_edge(selected) or []) or None
    fig = figures.network_figure(network, selected=selected, uirevision=f"run-{run_id}")
    fig = figures.keep_zoom(fig, zoom)
    diagram = {
        "width": figures.network_width(network),
        "shape": figures.selection_shape_style(),
        "inputs": network.get("input_names") or [],
    }
    note = sampled_rows_note(network)  # scores and curves on a sample of the rows
    alert = html.Div(note, className="muted small") if note else None
    return fig, diagram, figures.edge_curves_for_client(network), alert


def feature_ranking_panel(run_id: int) -> tuple[Any, None, None, Any]:
    """An RBF-subspace run in the diagram's place: its feature ranking from the projection (a
    KAN's attribution is the diagram's edge opacity)."""
    try:
        run = api_client.get_run(run_id)
    except ApiError as exc:
        message = figures.message_figure("Feature ranking unavailable.")
        return message, None, None, error_alert(exc, "Loading the run")
    ranking = (run.get("summary") or {}).get("feature_ranking") or {}
    method = ranking.get("method")
    note = html.Div(f"Ranking: {method}.", className="muted small") if method else None
    return figures.feature_ranking_figure(ranking), None, None, note


@callback(
    Output("run-network-zoom", "data"),
    Input("run-network", "relayoutData"),
    prevent_initial_call=True,
)
def remember_zoom(relayout):
    """The last zoom (or reset) of the diagram; other relayouts (the selection outline) are not
    zooms and leave it."""
    zoom = figures.zoom_from_relayout(relayout)
    return no_update if zoom is None else zoom


# The selection outline is drawn in the browser with Plotly.update on the diagram itself, when
# the browser is idle: a figure update through dcc.Graph (even a Patch of one shape) re-processes
# the whole 400-edge figure and cost ~200 ms per click (and so does Plotly.relayout since Dash
# 4.4, whose dcc.Graph copies a relayout back into its figure).
clientside_callback(
    ClientsideFunction(namespace="kanscope", function_name="highlightEdge"),
    Output("run-highlight", "data"),
    Input("run-selected-edge", "data"),
    State("run-diagram", "data"),
    prevent_initial_call=True,
)

clientside_callback(
    ClientsideFunction(namespace="kanscope", function_name="edgePreview"),
    Output("run-edge", "figure", allow_duplicate=True),
    Input("run-network", "clickData"),
    State("run-curves", "data"),
    prevent_initial_call=True,
)


def clicked_edge(click_data: dict | None) -> list[int] | None:
    points = click_data.get("points") if isinstance(click_data, dict) else None
    for point in points if isinstance(points, list) else []:
        address = valid_edge(point.get("customdata") if isinstance(point, dict) else None)
        if address is not None:
            return list(address)
    return None


@callback(
    Output("run-edge", "figure"),
    Output("run-edge-data", "data"),
    Output("run-selected-edge", "data"),
    Output("run-edge-alert", "children"),
    Output("run-suggestions", "data", allow_duplicate=True),
    Input("run-network", "clickData"),
    Input("run-version", "data"),
    State("run-selected-edge", "data"),
    State("run-id", "data"),
    prevent_initial_call=True,
)
def show_edge(click_data, _version, selected, run_id):
    if ctx.triggered_id == "run-network":
        edge_address = clicked_edge(click_data)
        if edge_address is None:  # a click on a node or empty space
            return (no_update,) * 5
    else:
        edge_address = list(valid_edge(selected) or []) or None
    run_id = positive_int(run_id)
    if not edge_address or run_id is None:
        return (no_update,) * 5
    layer, i, j = edge_address
    try:
        edge = api_client.run_edge(run_id, (layer, i, j))
    except ApiError as exc:
        return no_update, None, edge_address, error_alert(exc, "Loading the edge"), None
    fig = figures.edge_figure(edge, input_name=edge.get("input_name"))
    if note := sampled_rows_note(edge):
        fig.layout.title.text = f"{fig.layout.title.text}<br><sup>{note}</sup>"
    # the previous edge's candidates stay under the loading spinner until this edge's arrive,
    # but can no longer be fixed (re-rendering the table here cost the click ~50 ms)
    return fig, edge, edge_address, None, None


@callback(
    Output("run-candidates", "data"),
    Output("run-candidates", "selected_rows"),
    Output("run-suggestions", "data"),
    Output("run-edge-alert", "children", allow_duplicate=True),
    Input("run-selected-edge", "data"),
    Input("run-version", "data"),
    State("run-id", "data"),
    prevent_initial_call=True,
)
def load_suggestions(edge_address, _version, run_id):
    edge, run_id = valid_edge(edge_address), positive_int(run_id)
    if edge is None or run_id is None:
        return [], [], None, no_update
    try:
        result = api_client.edge_suggestions(run_id, edge)
    except ApiError as exc:
        return [], [], None, error_alert(exc, "Fitting symbolic candidates")
    suggestions = result.get("suggestions", []) if isinstance(result, dict) else result
    rows = [
        {
            "name": s.get("name"),
            "r2": fmt_number(s.get("r2"), 4),
            "complexity": s.get("complexity"),
            "params": ", ".join(fmt_number(p, 3) for p in (s.get("params") or [])),
        }
        for s in suggestions
    ]
    note = sampled_rows_note(result, "Candidates computed")  # fitted on a sample of the rows
    return rows, [], suggestions, html.Div(note, className="muted small") if note else None


@callback(
    Output("run-edge", "figure", allow_duplicate=True),
    Input("run-candidates", "selected_rows"),
    State("run-suggestions", "data"),
    State("run-edge-data", "data"),
    prevent_initial_call=True,
)
def preview_candidate(selected_rows, suggestions, edge):
    if not edge or not selected_rows:  # cleared for a new edge: its plot is already right
        return no_update
    candidate = None
    if selected_rows and suggestions and selected_rows[0] < len(suggestions):
        candidate = figures.candidate_preview(edge, suggestions[selected_rows[0]])
    return figures.edge_figure(edge, input_name=edge.get("input_name"), candidate=candidate)


@callback(
    Output("run-version", "data", allow_duplicate=True),
    Output("run-edge-notice", "children"),
    Output("toast", "data", allow_duplicate=True),
    Input("run-fix", "n_clicks"),
    Input("run-unfix", "n_clicks"),
    State("run-candidates", "selected_rows"),
    State("run-suggestions", "data"),
    State("run-selected-edge", "data"),
    State("run-version", "data"),
    State("run-id", "data"),
    prevent_initial_call=True,
    running=[(Output("run-fix", "disabled"), True, False)],
)
def fix_or_unfix(_fix, _unfix, selected_rows, suggestions, edge_address, version, run_id):
    """The outcome shows under the buttons and as a notification that stays (``toast``)."""
    version, notice = _fix_or_unfix(selected_rows, suggestions, edge_address, version, run_id)
    return version, notice, toast_for(notice)


def toast_for(message: Any) -> Any:
    """A notification repeating an action's outcome (success or failure; hints on what to
    fill in stay next to the control only)."""
    if not isinstance(message, html.Div):
        return no_update
    for kind in ("success", "danger"):
        if f"alert-{kind}" in str(getattr(message, "className", "")):
            return toast(_text_of(message.children), kind)
    return no_update


def _text_of(children: Any) -> str:
    """The plain text of an alert's children."""
    if isinstance(children, str):
        return children
    if isinstance(children, list | tuple):
        return "".join(_text_of(c) for c in children)
    inner = getattr(children, "children", None)
    return _text_of(inner) if inner is not None else ""


def _fix_or_unfix(selected_rows, suggestions, edge_address, version, run_id):
    if not user_clicked():
        return no_update, no_update
    edge, run_id = valid_edge(edge_address), positive_int(run_id)
    if edge is None or run_id is None:
        return no_update, alert("Click an edge in the network first.", "warning")
    where = "Edge ({}, {}→{})".format(*edge)
    if ctx.triggered_id == "run-unfix":
        try:
            api_client.unfix_edge(run_id, edge)
        except ApiError as exc:
            return no_update, error_alert(exc, f"Unfixing edge ({edge[0]}, {edge[1]}→{edge[2]})")
        return (version or 0) + 1, alert(f"{where} is a spline again.", "success", role="status")
    if not suggestions or not isinstance(suggestions, list):
        return no_update, alert("No candidates for this edge yet.", "warning")
    if not isinstance(selected_rows, list) or not selected_rows:  # never a silent default
        return no_update, alert(
            "Select a candidate in the table first (the best fit, by R², is listed first).",
            "warning",
        )
    index = index_int(selected_rows[0])
    candidate = suggestions[index] if index is not None and index < len(suggestions) else None
    name = candidate.get("name") if isinstance(candidate, dict) else None
    if not isinstance(name, str):
        return no_update, alert("Select one of the listed candidates.", "warning")
    try:
        api_client.fix_edge(run_id, edge, name)
    except ApiError as exc:
        return no_update, error_alert(exc, f"Fixing the edge to {name}")
    return (version or 0) + 1, alert(f"{where} fixed to {name}.", "success", role="status")


# ── whole-model actions ───────────────────────────────────────────────────────────────────


@callback(
    Output("run-version", "data", allow_duplicate=True),
    Output("run-action-alert", "children", allow_duplicate=True),
    Output("nav-location", "href", allow_duplicate=True),
    Output("toast", "data", allow_duplicate=True),
    Input("run-auto", "n_clicks"),
    Input("run-prune", "n_clicks"),
    Input("run-retrain", "n_clicks"),
    Input("run-reset", "n_clicks"),
    State("run-auto-threshold", "value"),
    State("run-prune-threshold", "value"),
    State("run-retrain-steps", "value"),
    State("run-version", "data"),
    State("run-id", "data"),
    State("run-info", "data"),
    prevent_initial_call=True,
    running=[
        (Output("run-auto", "disabled"), True, False),
        (Output("run-prune", "disabled"), True, False),
        (Output("run-retrain", "disabled"), True, False),
        (Output("run-reset", "disabled"), True, False),
    ],
)
def model_action(
    _auto, _prune, _retrain, _reset, threshold, prune_threshold, steps, version, run_id, info
):
    """Auto-symbolic, prune, reset, retrain; the outcome also as a notification that stays
    (a retrain's survives the move to the child run's page)."""
    version, message, href = _model_action(threshold, prune_threshold, steps, version, run_id, info)
    return version, message, href, toast_for(message)


def _model_action(threshold, prune_threshold, steps, version, run_id, info):
    run_id = positive_int(run_id)
    if not user_clicked() or run_id is None:
        return no_update, no_update, no_update
    if not inspectable(info):
        return (
            no_update,
            alert("Wait until a KAN run has finished training.", "warning"),
            (no_update),
        )
    bumped = (version or 0) + 1
    action = ctx.triggered_id
    try:
        if action == "run-auto":
            threshold = finite_number(threshold)
            if threshold is None:
                return (
                    no_update,
                    alert("Enter an R² threshold between 0 and 1.", "warning"),
                    (no_update),
                )
            result = api_client.auto_symbolic(run_id, threshold)
            text = auto_symbolic_text(result, threshold)
            return bumped, alert(text, "success", role="status"), no_update
        if action == "run-prune":
            prune_threshold = finite_number(prune_threshold)
            if prune_threshold is None:
                return no_update, alert("Enter a prune threshold ≥ 0.", "warning"), no_update
            result = api_client.prune(run_id, prune_threshold)
            kept_inputs = result.get("kept_inputs") or []
            text = f"Pruned {result['pruned']} edges; inputs kept: {', '.join(kept_inputs)}."
            return bumped, alert(text, "success", role="status"), no_update
        if action == "run-reset":
            api_client.reset_edits(run_id)
            return (
                bumped,
                alert("Back to the model as trained.", "success", role="status"),
                (no_update),
            )
        retrain_steps = positive_int(steps) if steps else None
        if steps and retrain_steps is None:
            return no_update, alert("Enter a whole number of steps ≥ 1.", "warning"), no_update
        child = api_client.retrain(run_id, retrain_steps)
        return no_update, alert(f"Run {child['id']} started.", "success"), f"/runs/{child['id']}"
    except ApiError as exc:
        label = {
            "run-auto": "Auto-symbolic",
            "run-prune": "Pruning",
            "run-reset": "Resetting edits",
        }.get(action, "Retraining")
        return no_update, alert([html.Strong(f"{label} failed: "), ui_words(str(exc))]), no_update


# ── formula, predictions and exports ──────────────────────────────────────────────────────


def _texts(value: Any) -> list[str]:
    """The strings of an API list (anything else dropped)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def formula_block(formula: dict[str, Any]) -> list[Any]:
    children: list[Any] = []
    network_r2 = formula.get("network_r2")
    note = formula.get("note")
    if isinstance(note, str) and note:  # a partial formula: which edges are still splines
        children.append(alert(ui_words(note), "info", role="status"))
    for output in formula.get("outputs") or []:
        children.append(formula_math(str(output.get("latex") or "")))
        skipped = [n for n in _texts(output.get("notes")) if n != note]
        if skipped:  # simplification steps skipped to keep the time bounded
            children.append(html.Ul([html.Li(n) for n in skipped], className="muted formula-notes"))
        children.append(
            html.Div(
                className="kv",
                children=[
                    html.Div(
                        [
                            html.Span("formula R² (training rows)"),
                            html.Span(fmt_number(output.get("r2")), className="formula-r2"),
                        ]
                    ),
                    html.Div(
                        [
                            html.Span("formula R² (validation rows)"),
                            html.Span(fmt_number(output.get("val_r2")), className="formula-val-r2"),
                        ]
                    ),
                    html.Div(
                        [
                            html.Span("network R² (training rows, with edits)"),
                            html.Span(fmt_number(network_r2)),
                        ]
                    ),
                    html.Div(
                        [
                            html.Span("formula RMSE (training rows)"),
                            html.Span(fmt_number(output.get("rmse"))),
                        ]
                    ),
                ],
            )
        )
    n_sym, n_edges = formula.get("n_symbolic_edges"), formula.get("n_edges")
    if not formula.get("complete") and not note:
        children.append(
            alert(
                f"{n_sym} of {n_edges} edges are symbolic; the remaining splines are "
                "approximated in this formula. Run auto-symbolic (or fix edges) for an exact one.",
                "info",
            )
        )
    return children


FORMULA_EXPORTS = ("latex", "python", "sympy")


def export_states(model_ready: bool, formula_ready: bool, why_not: str) -> list[Any]:
    """``disabled`` and ``title`` of each export button, in ``EXPORTS`` order."""
    states: list[Any] = []
    for kind, label in EXPORTS:
        ready = formula_ready if kind in FORMULA_EXPORTS else model_ready
        reason = why_not if kind in FORMULA_EXPORTS and model_ready else "No trained model yet."
        states += [not ready, f"Download {label}" if ready else reason]
    return states


@callback(
    Output("run-formula", "children"),
    Output("run-predictions", "figure"),
    *[Output(f"run-export-{kind}", prop) for kind, _ in EXPORTS for prop in ("disabled", "title")],
    Input("run-info", "data"),
    Input("run-version", "data"),
    State("run-id", "data"),
)
def load_formula(info, _version, run_id):
    run_id = positive_int(run_id)
    if (
        not isinstance(info, dict)
        or run_id is None
        or info.get("status") != "succeeded"
        or not info.get("has_model")
    ):
        waiting = html.Div("The formula appears when training has finished.", className="muted")
        return waiting, no_update, *export_states(False, False, "")
    predictions_fig = no_update
    try:
        predictions = api_client.run_predictions(run_id)
        y_true, y_pred = predictions.get("y_true") or [], predictions.get("y_pred") or []
        if y_true and isinstance(y_true[0], list):
            y_true, y_pred = [r[0] for r in y_true], [r[0] for r in y_pred]
        metric = METRIC_LABELS.get(predictions.get("metric_name") or "", "metric")
        title = (
            f"current model (with any symbolic edits): validation {metric} "
            f"{fmt_number(predictions.get('metric'))}"
        )
        if y_true and not isinstance(y_true[0], str):
            interval = ensemble_figures.interval_of(predictions)  # an ensemble run's interval
            predictions_fig = figures.predictions_figure(
                y_true, y_pred, title=title, interval=interval
            )
        else:
            predictions_fig = figures.message_figure(title)
    except ApiError as exc:
        predictions_fig = figures.message_figure(f"Predictions unavailable: {exc}")
    if info.get("model") != "kan":
        no_formula = export_states(True, False, "Formulas come from KAN runs.")
        return (
            html.Div("Formulas come from KAN runs.", className="muted"),
            predictions_fig,
            *(no_formula),
        )
    try:
        formula = api_client.run_formula(run_id)
    except ApiError as exc:
        detail = shorten(ui_words(str(exc)))
        states = export_states(True, False, "No formula yet: see the message above.")
        return alert(f"No formula yet. {detail}", "info"), predictions_fig, *states
    if formula.get("numeric_edges"):
        why = "Some edges are still splines: run Auto-symbolic or fix them first."
        return formula_block(formula), predictions_fig, *export_states(True, False, why)
    return formula_block(formula), predictions_fig, *export_states(True, True, "")


@callback(
    Output("run-download", "data"),
    Output("run-export-alert", "children"),
    *[Input(f"run-export-{kind}", "n_clicks") for kind, _ in EXPORTS],
    State("run-id", "data"),
    prevent_initial_call=True,
)
def export(*args):
    run_id = positive_int(args[-1])
    if not ctx.triggered_id or not any(args[:-1]) or run_id is None:
        return no_update, no_update
    kind = one_of(str(ctx.triggered_id).removeprefix("run-export-"), api_client.EXPORT_KINDS)
    if kind is None:
        return no_update, no_update
    try:
        content, filename = api_client.export_run(run_id, kind)
    except ApiError as exc:
        failed = [html.Strong(f"Exporting {kind} failed: "), shorten(ui_words(str(exc)))]
        return no_update, alert(failed)
    filename = filename or f"run{run_id}_{EXPORT_FALLBACK_NAMES[kind]}"
    return dcc.send_bytes(content, filename), None


@callback(
    Output("run-download", "data", allow_duplicate=True),
    Output("run-predict-alert", "children"),
    Output("run-predict-upload", "contents"),
    Input("run-predict-upload", "contents"),
    State("run-predict-upload", "filename"),
    State("run-id", "data"),
    prevent_initial_call=True,
)
def predict_new_rows(contents, filename, run_id):
    """The uploaded rows with the run's predictions, downloaded; the upload is cleared so
    that the same file can be sent again."""
    run_id = positive_int(run_id)
    if not isinstance(contents, str) or not contents or run_id is None:
        return no_update, no_update, no_update
    name = filename if isinstance(filename, str) and filename else "rows.csv"
    try:
        content, out_name = api_client.predict_rows(run_id, name, decode_upload(contents))
    except ValueError as exc:
        return no_update, alert(str(exc)), None
    except ApiError as exc:
        return no_update, error_alert(exc, f"Predicting {name}"), None
    rows = max(0, sum(1 for _ in csv.reader(io.StringIO(content.decode("utf-8")))) - 1)
    out_name = out_name or f"run{run_id}_new_predictions.csv"
    done = f"Predicted {plural(rows, 'row')} of {name}: {out_name}."
    return dcc.send_bytes(content, out_name), alert(done, "success", role="status"), None
