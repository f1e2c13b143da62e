"""Train: a KAN or MLP form with defaults and tooltips, then live loss curves while it trains."""

from __future__ import annotations

import uuid
from typing import Any

import dash
from dash import Input, Output, State, callback, clientside_callback, dcc, html, no_update

from app.dashboard import api_client, discovery_panel, ensemble_form, figures
from app.dashboard.alloy_components import (
    COMPOSITION,
    NO_GROUPS,
    cross_validated_run_request,
    group_options,
    split_body,
)
from app.dashboard.api_client import ApiError
from app.dashboard.components import (
    METRIC_LABELS,
    TERMINAL_STATUSES,
    alert,
    error_alert,
    field,
    fmt_number,
    status_badge,
    user_clicked,
)
from app.dashboard.data_check import row_check_text
from app.dashboard.forms import build_payload, estimate_parameters, parse_hidden
from app.dashboard.validation import positive_int

dash.register_page(__name__, path="/train", name="Train", title="Train · kanscope")

POLL_MS = 1000
#: Early stopping is on by default: overfitting runs keep their best validation weights.
DEFAULT_PATIENCE = 100
BASES = ["bspline", "rbf", "chebyshev", "relu_kan", "rational", "af_kan", "s_kan"]

HELP = {
    "model": "KAN: learnable functions on edges, readable as formulas. MLP: a baseline network.",
    "hidden": "Hidden layer widths, comma-separated (e.g. '5' or '8, 4'). The full width is "
    "[number of features, hidden…, number of outputs]. Leave empty for one layer.",
    "grid": "Grid intervals per edge function: more = finer functions, more parameters.",
    "k": "Spline order (3 = cubic).",
    "basis": "Edge function family: B-spline (pykan), Gaussian RBF (FastKAN), Chebyshev, "
    "ReLU-KAN, rational (KAT), AF-KAN (SiLU windows), S-KAN (each node picks one of B-spline, "
    "RBF, Chebyshev, rational after a warm-up on all of them).",
    "rbf_dim": "Dimension k of the learned subspace z = W·x the Gaussian units see (1–16).",
    "rbf_centres": "Number of Gaussian units exp(-‖z - c‖²) (2–256).",
    "activation": "MLP activation function.",
    "steps": "Optimiser steps (full passes over the batch).",
    "lr": "Learning rate. 0.01 suits Adam; LBFGS often wants 1.",
    "optimizer": "Adam is robust; LBFGS converges fast on small full-batch problems.",
    "batch_size": "Mini-batch size; empty = full batch.",
    "lamb": "Sparsity regularisation (L1 + entropy on edges). 0 = off; try 1e-3 before pruning.",
    "update_grid_every": "Refit spline grids to the data every n steps (0 = never).",
    "val_fraction": "Share of rows held out for validation (0–0.9).",
    "seed": "Random seed: the same seed and data give the same run.",
    "patience": "Stop when the validation loss has not improved for this many steps and keep "
    "the weights of its best step (empty = off: train every step and keep the last weights). "
    "Needs validation rows: off when the validation fraction is 0.",
    "name": "Optional run name shown in the runs table.",
    "split": "Random hold-out: one validation share. Grouped K-fold: the model is trained K times "
    "and each fold is the test set once; rows of one group (e.g. the same alloy) never sit in both "
    "training and test. The folds are stored with the run and follow the seed.",
    "folds": "K in K-fold cross-validation (2–20).",
    "group": "Rows with the same value stay in one fold. 'composition' uses the detected formula "
    "or element columns.",
}


#: Form values survive a reload and a visit to another page (the tab's session storage).
KEEP: dict[str, Any] = {"persistence": True, "persistence_type": "session"}


def number_input(element_id: str, value: Any, **kwargs: Any) -> dcc.Input:
    return dcc.Input(id=element_id, type="number", value=value, debounce=True, **KEEP, **kwargs)


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Train a model"),
            # The run this tab started last (session storage): a reload or coming back to the
            # page reattaches to it. tr-run is the poll's cursor over its metrics.
            dcc.Store(id="tr-active", storage_type="session"),
            dcc.Store(id="tr-run", data=None),  # {"id", "last_step": int | None, "status"}
            dcc.Interval(id="tr-interval", interval=POLL_MS, disabled=True),
            html.Div(id="tr-selection", className="card"),
            html.Div(
                className="card",
                children=[
                    html.Div(
                        className="row",
                        children=[
                            field(
                                "Model",
                                dcc.RadioItems(
                                    id="tr-model",
                                    options=[
                                        {"label": " KAN", "value": "kan"},
                                        {"label": " MLP", "value": "mlp"},
                                        {"label": " RBF-subspace", "value": "rbf_subspace"},
                                    ],
                                    value="kan",
                                    **KEEP,
                                    inline=True,
                                ),
                                HELP["model"],
                            ),
                            field(
                                "Hidden layers",
                                dcc.Input(
                                    id="tr-hidden", type="text", value="5", debounce=True, **KEEP
                                ),
                                HELP["hidden"],
                            ),
                            field(
                                "Run name",
                                dcc.Input(
                                    id="tr-name", type="text", value="", debounce=True, **KEEP
                                ),
                                HELP["name"],
                            ),
                            html.Div(id="tr-shape", className="kv"),
                        ],
                    ),
                    html.Div(
                        id="tr-kan-options",
                        className="form-grid",
                        children=[
                            field("Grid", number_input("tr-grid", 5, min=1, max=200), HELP["grid"]),
                            field(
                                "Spline order k", number_input("tr-k", 3, min=1, max=5), HELP["k"]
                            ),
                            field(
                                "Basis",
                                dcc.Dropdown(
                                    id="tr-basis",
                                    options=BASES,
                                    value="bspline",
                                    **KEEP,
                                    clearable=False,
                                ),
                                HELP["basis"],
                            ),
                            field(
                                "Grid update every",
                                number_input("tr-update-grid", 0, min=0),
                                HELP["update_grid_every"],
                            ),
                            *ensemble_form.fields(),
                        ],
                    ),
                    html.Div(
                        id="tr-mlp-options",
                        className="form-grid",
                        style={"display": "none"},
                        children=[
                            field(
                                "Activation",
                                dcc.Dropdown(
                                    id="tr-activation",
                                    options=["silu", "relu", "tanh", "gelu"],
                                    value="silu",
                                    **KEEP,
                                    clearable=False,
                                ),
                                HELP["activation"],
                            ),
                        ],
                    ),
                    html.Div(  # the RBF network on a learned active subspace (rbf_subspace)
                        id="tr-rbf-options",
                        className="form-grid",
                        style={"display": "none"},
                        children=[
                            field(
                                "Subspace dimension",
                                number_input("tr-rbf-dim", 2, min=1, max=16),
                                HELP["rbf_dim"],
                            ),
                            field(
                                "Centres",
                                number_input("tr-rbf-centres", 16, min=2, max=256),
                                HELP["rbf_centres"],
                            ),
                        ],
                    ),
                    html.Div(
                        className="form-grid",
                        children=[
                            field("Steps", number_input("tr-steps", 200, min=1), HELP["steps"]),
                            field(
                                "Learning rate",
                                number_input("tr-lr", 0.01, min=0, step="any"),
                                HELP["lr"],
                            ),
                            field(
                                "Optimiser",
                                dcc.Dropdown(
                                    id="tr-optimizer",
                                    options=["adam", "lbfgs"],
                                    value="adam",
                                    **KEEP,
                                    clearable=False,
                                ),
                                HELP["optimizer"],
                            ),
                            field(
                                "Batch size",
                                number_input("tr-batch", None, min=1, placeholder="full batch"),
                                HELP["batch_size"],
                            ),
                            field(
                                "Regularisation λ",
                                number_input("tr-lamb", 0.0, min=0, step="any"),
                                HELP["lamb"],
                            ),
                            field(
                                "Validation fraction",
                                number_input("tr-val", 0.2, min=0, max=0.9, step=0.05),
                                HELP["val_fraction"],
                            ),
                            field(
                                "Early-stopping patience",
                                number_input(
                                    "tr-patience", DEFAULT_PATIENCE, min=1, placeholder="off"
                                ),
                                HELP["patience"],
                            ),
                            field("Seed", number_input("tr-seed", 0, min=0), HELP["seed"]),
                        ],
                    ),
                    html.Div(
                        className="form-grid",
                        children=[
                            field(
                                "Validation",
                                dcc.RadioItems(
                                    id="tr-split",
                                    options=[
                                        {"label": " random hold-out", "value": "holdout"},
                                        {"label": " grouped K-fold CV", "value": "kfold"},
                                    ],
                                    value="holdout",
                                    **KEEP,
                                ),
                                HELP["split"],
                            ),
                            html.Div(
                                id="tr-cv-options",
                                style={"display": "none"},
                                className="form-grid",
                                children=[
                                    field(
                                        "Folds (K)",
                                        number_input("tr-folds", 5, min=2, max=20),
                                        HELP["folds"],
                                    ),
                                    field(
                                        "Group folds by",
                                        dcc.Dropdown(
                                            id="tr-group", value=COMPOSITION, clearable=False
                                        ),
                                        HELP["group"],
                                    ),
                                ],
                            ),
                        ],
                    ),
                    html.Div(
                        className="actions",
                        children=[
                            html.Button("Start training", id="tr-start"),
                            html.Button(
                                "Cancel run", id="tr-cancel", className="danger", disabled=True
                            ),
                            html.Span(id="tr-open-link"),
                        ],
                    ),
                    html.Div(id="tr-alert"),
                ],
            ),
            discovery_panel.panel(discovery_panel.TRAIN_PAGE),
            html.Div(
                className="card",
                children=[
                    html.Div(
                        className="row",
                        children=[
                            html.H3("Training progress", className="col"),
                            html.Div(id="tr-status", className="col kv"),
                        ],
                    ),
                    html.Div(
                        className="chart-with-note",
                        children=[
                            dcc.Graph(
                                id="tr-loss",
                                figure=figures.loss_figure([], uirevision="train"),
                                config={"displaylogo": False},
                            ),
                            # over the empty chart: why it is empty (no run, queued, starting)
                            html.Div(
                                "Start a run: its loss curve is drawn here as it trains.",
                                id="tr-chart-note",
                                className="chart-note",
                            ),
                        ],
                    ),
                ],
            ),
        ]
    )


@callback(
    Output("tr-selection", "children"),
    Input("selection-store", "data"),
)
def show_selection(selection: dict | None):
    if not selection or not selection.get("dataset_id"):
        return alert(
            ["No dataset chosen yet. ", dcc.Link("Choose a dataset and target first →", href="/")],
            "info",
        )
    features = selection.get("features") or []
    return html.Div(
        className="kv",
        children=[
            html.Div([html.Span("dataset"), html.Span(selection.get("dataset_label") or "")]),
            html.Div([html.Span("target"), html.Span(selection.get("target") or "")]),
            html.Div(
                [html.Span("features"), html.Span(f"{len(features)}", title=", ".join(features))]
            ),
            html.Div([html.Span("task"), html.Span(selection.get("task") or "")]),
            html.Div([html.Span(""), dcc.Link("change", href="/")]),
        ],
    )


# shown or hidden in the browser: no request among the ones a (re)load of the page makes
clientside_callback(
    "(model) => model === 'rbf_subspace' ? {} : {display: 'none'}",
    Output("tr-rbf-options", "style"),
    Input("tr-model", "value"),
)


@callback(
    Output("tr-kan-options", "style"),
    Output("tr-mlp-options", "style"),
    Output("tr-shape", "children"),
    Input("tr-model", "value"),
    Input("tr-hidden", "value"),
    Input("tr-grid", "value"),
    Input("tr-k", "value"),
    Input("selection-store", "data"),
)
def show_shape(model, hidden, grid, k, selection):
    kan_style = {} if model == "kan" else {"display": "none"}
    mlp_style = {} if model == "mlp" else {"display": "none"}
    selection = selection or {}
    n_in = len(selection.get("features") or [])
    try:
        widths = parse_hidden(hidden)
    except ValueError as exc:
        return kan_style, mlp_style, html.Span(str(exc), className="alert-danger")
    if not n_in:
        return kan_style, mlp_style, ""
    if selection.get("task") == "classification":
        # one output per class: the API knows how many; the count appears once the run exists
        shape = f"[{', '.join(str(w) for w in [n_in, *widths])}, classes]"
        estimate = "after start"
    else:
        width = [n_in, *widths, 1]
        shape = str(width)
        estimate = f"≈ {estimate_parameters(model, width, int(grid or 5), int(k or 3)):,}"
        if model == "rbf_subspace":  # its size is in its own fields
            estimate = "after start"
    return (
        kan_style,
        mlp_style,
        [
            html.Div([html.Span("width"), html.Span(shape)]),
            html.Div([html.Span("parameters"), html.Span(estimate, id="tr-param-estimate")]),
        ],
    )


#: outputs that show a followed run: its cursor, the poll, the curve so far, link, status, alert
FOLLOW_PROPS = (
    ("tr-run", "data"),
    ("tr-interval", "disabled"),
    ("tr-interval", "interval"),
    ("tr-loss", "figure"),
    ("tr-open-link", "children"),
    ("tr-chart-note", "children"),
    ("tr-status", "children"),
    ("tr-cancel", "disabled"),
)
#: how long Start waits for the new run's first point, so that its answer draws it (a run that
#: takes longer, e.g. queued behind others, is followed by the poll)
START_WAIT_S = 1.5


@callback(
    Output("tr-active", "data"),
    Output("tr-alert", "children"),
    *(Output(i, p, allow_duplicate=True) for i, p in FOLLOW_PROPS),
    Input("tr-start", "n_clicks"),
    State("selection-store", "data"),
    State("tr-model", "value"),
    State("tr-hidden", "value"),
    State("tr-name", "value"),
    State("tr-grid", "value"),
    State("tr-k", "value"),
    State("tr-basis", "value"),
    State("tr-update-grid", "value"),
    State("tr-activation", "value"),
    State("tr-rbf-dim", "value"),
    State("tr-rbf-centres", "value"),
    State("tr-steps", "value"),
    State("tr-lr", "value"),
    State("tr-optimizer", "value"),
    State("tr-batch", "value"),
    State("tr-lamb", "value"),
    State("tr-val", "value"),
    State("tr-patience", "value"),
    State("tr-seed", "value"),
    State("tr-split", "value"),
    State("tr-folds", "value"),
    State("tr-group", "value"),
    State("tr-ens-members", "value"),
    State("tr-ens-bootstrap", "value"),
    State("tr-ens-group", "value"),
    prevent_initial_call=True,
    running=[(Output("tr-start", "disabled"), True, False)],
)
def start_training(
    _clicks,
    selection,
    model,
    hidden,
    name,
    grid,
    k,
    basis,
    update_grid,
    activation,
    rbf_dim,
    rbf_centres,
    steps,
    lr,
    optimizer,
    batch,
    lamb,
    val,
    patience,
    seed,
    split_kind="holdout",
    folds=None,
    group=None,
    ens_members=None,
    ens_bootstrap=None,
    ens_group=None,
):
    if not user_clicked():
        return no_update, no_update, *NOT_FOLLOWED
    dataset_id = positive_int(selection.get("dataset_id")) if isinstance(selection, dict) else None
    if dataset_id is None:
        return refused(alert("Choose a dataset and target on the Datasets page first.", "warning"))
    values = dict(
        model=model,
        hidden=hidden,
        name=name,
        grid=grid,
        k=k,
        basis=basis,
        update_grid=update_grid,
        activation=activation,
        rbf_dim=rbf_dim,
        rbf_centres=rbf_centres,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        batch=batch,
        lamb=lamb,
        val=val,
        patience=patience,
        seed=seed,
    )
    try:
        payload = build_payload(selection, values)
        payload = ensemble_form.with_ensemble(
            payload, ens_members, ens_bootstrap, ens_group, split_kind
        )
    except ValueError as exc:
        return refused(alert(str(exc), "warning"))
    # refuse here, naming what to untick, what training would refuse after queueing (the
    # Datasets page checked the rows of the selection it stored: no second check then)
    if not selection.get("rows_checked"):
        try:
            check = api_client.row_check(
                dataset_id,
                str(selection.get("target")),
                selection.get("features") or [],
                payload["task"],
            )
        except ApiError as exc:
            return refused(error_alert(exc, "Checking the rows"))
        kind, text = row_check_text(check)
        if kind == "danger":
            change = dcc.Link("Change the columns", href="/")
            return refused(alert([text, " ", change], "danger"))
    # One key per click (the button is disabled while the request runs): a retried request
    # starts one run.
    if split_kind == "kfold":
        try:
            body = cross_validated_run_request(payload, split_body(group, folds, payload["seed"]))
        except (TypeError, ValueError) as exc:
            return refused(alert(str(exc), "warning"))
        try:
            created = api_client.create_leaderboard(dataset_id, body)
        except ApiError as exc:
            return refused(error_alert(exc, "Starting the cross-validated run"))
        run = created["runs"][0]
    else:
        try:
            run = api_client.create_run(payload, idempotency_key=str(uuid.uuid4()))
        except ApiError as exc:
            return refused(error_alert(exc, "Starting the run"))
    # the answer draws the run's first point: no second round trip (attach_run), no poll
    submitted = alert(f"Run {run['id']} submitted.", "success", role="status")
    followed = follow_run(run["id"], payload["task"], START_WAIT_S, submitted)
    return run["id"], followed[-1], *followed[:-1]


NOT_FOLLOWED = (no_update,) * len(FOLLOW_PROPS)


def refused(message: Any) -> tuple:
    """Start's answer when no run was started: ``message`` in the alert, nothing else."""
    return no_update, message, *NOT_FOLLOWED


def read_to_the_end(status: Any, points: list) -> bool:
    """The page has all of a run's points once the run had finished before they were read (its
    status is read first) and the answer was shorter than a page: a full page of points may
    leave more behind it, which one more poll fetches."""
    return status in TERMINAL_STATUSES and len(points) < api_client.METRICS_PAGE


def follow_run(run_id: int, task: Any, wait_s: float, alert_now: Any = no_update) -> tuple:
    """The page following run ``run_id`` (values for :data:`FOLLOW_PROPS`, then the alert):
    its curve so far, waiting up to ``wait_s`` for a first point, its status, and the poll on
    (quick until the first point arrives) while it is not finished. ``alert_now`` is the
    alert while it runs; a finished run says how it ended."""
    link = dcc.Link(f"Open run {run_id} →", href=f"/runs/{run_id}", className="button secondary")
    try:
        # the run before its rows, as the poll reads them: a run that finishes while this waits
        # for its first point is seen finished by the next poll, with every row stored (read
        # after, it ended the polls with only the rows read before it finished)
        run = api_client.get_run(run_id)
        metrics = api_client.run_metrics(run_id, wait_s=wait_s)
    except ApiError as exc:  # the poll tries again
        figure = figures.loss_figure([], uirevision=f"run-{run_id}", task=task)
        state = {"id": run_id, "last_step": None, "status": None}
        failed = error_alert(exc, "Reading progress")
        return state, False, FIRST_POLL_MS, figure, link, "", failed, False, alert_now
    points = metrics.get("points") or []
    last_step = metrics.get("last_step") if points else None
    status = run.get("status")
    done = read_to_the_end(status, points)
    figure = figures.loss_figure(points, uirevision=f"run-{run_id}", task=task)
    return (
        {"id": run_id, "last_step": last_step, "status": status},
        done,
        POLL_MS if points or done else FIRST_POLL_MS,
        figure,
        link,
        "" if points else chart_note(run),
        run_status_items(run, last_step, metrics.get("metric_name")),
        done or bool(run.get("cancel_requested")),
        finished_alert(run) if done else alert_now,
    )


@callback(
    Output("tr-run", "data"),
    Output("tr-interval", "disabled"),
    Output("tr-interval", "interval", allow_duplicate=True),
    Output("tr-loss", "figure"),
    Output("tr-open-link", "children"),
    Output("tr-chart-note", "children", allow_duplicate=True),
    Output("tr-status", "children", allow_duplicate=True),
    Output("tr-cancel", "disabled", allow_duplicate=True),
    Output("tr-alert", "children", allow_duplicate=True),
    Input("tr-active", "data"),
    State("selection-store", "data"),
    State("tr-run", "data"),
    prevent_initial_call="initial_duplicate",  # runs on load too: a reload reattaches
)
def attach_run(active: Any, selection: Any = None, following: Any = None):
    """Follow the run this tab started after a reload or a visit to another page (the id is
    kept in the tab's session storage): its curve so far and status in this one answer. Right
    after Start there is nothing to do (Start's answer followed it)."""
    run_id = positive_int(active)
    if run_id is None:
        return None, True, *(no_update,) * 2, None, *(no_update,) * 4
    if isinstance(following, dict) and following.get("id") == run_id:
        return (no_update,) * (len(FOLLOW_PROPS) + 1)
    task = selection.get("task") if isinstance(selection, dict) else None
    return follow_run(run_id, task, 0.0)


@callback(
    Output("tr-loss", "extendData"),
    Output("tr-run", "data", allow_duplicate=True),
    Output("tr-status", "children"),
    Output("tr-interval", "disabled", allow_duplicate=True),
    Output("tr-cancel", "disabled"),
    Output("tr-alert", "children", allow_duplicate=True),
    Output("tr-chart-note", "children"),
    Output("tr-interval", "interval"),
    Input("tr-interval", "n_intervals"),
    State("tr-run", "data"),
    prevent_initial_call=True,
)
def poll_training(_n, run_state):
    run_id = positive_int(run_state.get("id")) if isinstance(run_state, dict) else None
    if run_id is None:
        return no_update, no_update, no_update, True, True, no_update, no_update, no_update
    after_step = run_state.get("last_step")
    if not isinstance(after_step, int) or isinstance(after_step, bool) or after_step < -1:
        after_step = None  # a store from the browser: anything else starts from the beginning
    try:
        # the run first: a finished status read before the rows means every row is stored, so
        # the poll that sees it draws the whole curve (read after, a run finishing between the
        # two requests left its last rows undrawn and stopped the polls)
        run = api_client.get_run(run_id)
        metrics = api_client.run_metrics(run_id, after_step=after_step)
    except ApiError as exc:
        failed = error_alert(exc, "Reading progress")
        return no_update, no_update, failed, no_update, no_update, no_update, no_update, no_update
    points = metrics.get("points") or []
    extend = no_update
    if points:
        data, indices = figures.loss_extension(points)
        extend = (data, indices, 100_000)
    last_step = metrics.get("last_step")
    if last_step is None:
        last_step = run_state.get("last_step")
    status = run.get("status")
    done = read_to_the_end(status, points)
    # once it ends, the "submitted" message gives way to how it ended (never a stale one): the
    # poll that has read to the end is the last (it turns the polls off)
    ended = finished_alert(run) if done else no_update
    has_points = last_step is not None
    return (
        extend,
        {"id": run_id, "last_step": last_step, "status": status},
        run_status_items(run, last_step, metrics.get("metric_name")),
        done,
        done or bool(run.get("cancel_requested")),
        ended,
        "" if has_points else chart_note(run),
        # quick polls until the first point is drawn, then once a second
        POLL_MS if has_points or done else FIRST_POLL_MS,
    )


#: the poll's interval until a run's first point arrives (a small run is live from its start)
FIRST_POLL_MS = 250


def queue_text(run: dict) -> str:
    """``queued, position 2`` (1 = next to start)."""
    position = run.get("queue_position")
    return f"queued, position {position}" if isinstance(position, int) else "queued"


def chart_note(run: dict) -> str:
    """Why the loss chart of ``run`` is still empty."""
    status = run.get("status")
    if status == "queued":
        return f"Run {run.get('id')} is {queue_text(run)}: the curve starts with its first step."
    if status == "running":
        return f"Run {run.get('id')} is starting: waiting for its first step."
    if status in TERMINAL_STATUSES:
        return f"Run {run.get('id')} {status} without logging a step."
    return ""


def finished_alert(run: dict) -> html.Div:
    run_id, status = run.get("id"), run.get("status")
    link = dcc.Link(f"open run {run_id} →", href=f"/runs/{run_id}")
    if status == "succeeded":
        return alert([f"Run {run_id} succeeded: ", link], "success", role="status")
    if status == "cancelled":
        return alert([f"Run {run_id} was cancelled: ", link], "info", role="status")
    return alert([f"Run {run_id} failed: {run.get('error') or 'see the run page'} ", link])


def run_status_items(run: dict, last_step: int | None, metric_name: str | None) -> list:
    summary = run.get("summary") or {}
    config = run.get("config") or {}
    cv = config.get("cv") or {}
    n_folds = ((cv.get("split") or {}).get("spec") or {}).get("n_splits")
    total = f"{config.get('steps', '?')} × {n_folds} folds" if n_folds else config.get("steps", "?")
    items = [
        html.Div([html.Span("run"), html.Span(str(run.get("id")), id="tr-run-id")]),
        html.Div([html.Span("status"), status_badge(run.get("status"), "tr-status-badge")]),
    ]
    if run.get("status") == "queued":
        items.append(html.Div([html.Span("queue"), html.Span(queue_text(run), id="tr-queue")]))
    items += [
        html.Div(
            [
                html.Span("step"),
                html.Span(f"{last_step or 0} / {total}", id="tr-step"),
            ]
        ),
    ]
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
                        f"{'CV mean' if n_folds else 'val'} "
                        f"{METRIC_LABELS.get(metric_name or '', 'metric')}"
                    ),
                    html.Span(fmt_number(summary["val_metric"])),
                ]
            )
        )
    if summary.get("n_rows_used") is not None:
        used = f"{summary['n_rows_used']:,}"
        if summary.get("n_rows_dropped"):
            used += f" ({summary['n_rows_dropped']:,} dropped: missing values)"
        items.append(html.Div([html.Span("rows"), html.Span(used, id="tr-rows")]))
    if run.get("status") == "queued" and run.get("queue_note"):
        items.append(html.Div(alert(run["queue_note"], "info"), style={"flexBasis": "100%"}))
    if run.get("error"):
        items.append(html.Div(alert(run["error"], "danger"), style={"flexBasis": "100%"}))
    return items


@callback(
    Output("tr-alert", "children", allow_duplicate=True),
    Output("tr-cancel", "disabled", allow_duplicate=True),
    Input("tr-cancel", "n_clicks"),
    State("tr-run", "data"),
    prevent_initial_call=True,
)
def cancel_training(_clicks, run_state):
    if not user_clicked():
        return no_update, no_update
    run_id = positive_int(run_state.get("id")) if isinstance(run_state, dict) else None
    if run_id is None:
        return no_update, True
    try:
        api_client.cancel_run(run_id)
    except ApiError as exc:
        return error_alert(exc, "Cancelling"), no_update
    return alert(f"Cancel requested for run {run_id}.", "info", role="status"), True


clientside_callback(
    "(split) => split === 'kfold' ? {} : {display: 'none'}",
    Output("tr-cv-options", "style"),
    Input("tr-split", "value"),
)


@callback(
    Output("tr-group", "options"),
    Output("tr-group", "value"),
    Input("selection-store", "data"),
    Input("tr-split", "value"),
    State("tr-group", "value"),
)
def list_group_columns(selection: dict | None, split_kind: str | None, current: str | None):
    """Group options for K-fold: composition (when the dataset has one), none, any column.
    Read once K-fold is chosen (two API calls fewer while the page loads)."""
    if split_kind != "kfold":
        return no_update, no_update
    dataset_id = positive_int(selection.get("dataset_id")) if isinstance(selection, dict) else None
    if dataset_id is None:
        return group_options([], None), NO_GROUPS
    try:
        preview = api_client.dataset_preview(dataset_id, limit=1)
        composition = api_client.dataset_composition(dataset_id)
    except ApiError:
        return group_options([], None), NO_GROUPS  # the form's own call will show the error
    names = [s["name"] for s in preview.get("stats") or []]
    detected = composition.get("detected")
    source = (detected.get("formula_column") or "element columns") if detected else None
    options = group_options(names, source)
    values = [o["value"] for o in options]
    if current in values:
        return options, current
    return options, COMPOSITION if source else NO_GROUPS
