"""The "Discover formula" panel of the run page and the Train page.

A discovery is a background run (``model: "discover"``) on the server's executor: the panel
starts it (for the open run: ``POST /runs/{id}/discover``, same data and validation rows; on the
Train page: ``POST /runs`` with the chosen dataset, target, features, seed and validation
fraction), polls ``GET /runs/{child}/discovery`` every second while it runs (progress, time
used of the budget), and then shows the chosen formula with its held-out R² next to the
networks' R² on the same rows, and the Pareto front. State lives in ``dcc.Store`` per page
(``{prefix}-job`` = ``{"run_id": int}``); every value from the browser is checked first.
"""

from __future__ import annotations

import uuid
from typing import Any

from dash import Input, Output, State, callback, dcc, html, no_update

from app.dashboard import api_client, figures
from app.dashboard.api_client import ApiError
from app.dashboard.components import (
    TERMINAL_STATUSES,
    alert,
    data_table,
    error_alert,
    field,
    fmt_number,
    status_badge,
    user_clicked,
)
from app.dashboard.validation import finite_number, positive_int

POLL_MS = 1000
BUDGET_MIN_S, BUDGET_MAX_S, BUDGET_DEFAULT_S = 5, 600, 60
RUN_PAGE, TRAIN_PAGE = "run-disc", "tr-disc"
HELP = (
    "Searches for the simplest formula that explains the target, within the time budget, as a "
    "background job. It fits on the training rows only; the R² shown is on the held-out "
    "validation rows, the same rows the networks are scored on."
)
FRONT_COLUMNS = [
    {"name": "complexity", "id": "complexity"},
    {"name": "held-out R²", "id": "val_r2"},
    {"name": "search R²", "id": "r2"},
    {"name": "held-out RMSE", "id": "val_rmse"},
    {"name": "formula", "id": "formula"},
    {"name": "source", "id": "source"},
]


def panel(prefix: str) -> html.Div:
    """The card: budget, Discover / Stop buttons, progress, result."""
    return html.Div(
        className="card",
        id=f"{prefix}-card",
        children=[
            html.H3("Discover formula"),
            html.Div(HELP, className="muted small"),
            dcc.Store(id=f"{prefix}-job", data=None),  # {"run_id": int}
            dcc.Interval(id=f"{prefix}-interval", interval=POLL_MS, disabled=True),
            html.Div(
                className="actions",
                children=[
                    field(
                        "Time budget (s)",
                        dcc.Input(
                            id=f"{prefix}-budget",
                            type="number",
                            value=BUDGET_DEFAULT_S,
                            min=BUDGET_MIN_S,
                            max=BUDGET_MAX_S,
                            step=1,
                        ),
                        f"How long the search may take: {BUDGET_MIN_S}–{BUDGET_MAX_S} s. The "
                        "best formula found in that time is reported.",
                    ),
                    html.Button("Discover formula", id=f"{prefix}-start"),
                    html.Button("Stop", id=f"{prefix}-stop", className="danger", disabled=True),
                    html.Span(id=f"{prefix}-link"),
                ],
            ),
            html.Div(id=f"{prefix}-alert"),
            html.Div(id=f"{prefix}-progress"),
            html.Div(id=f"{prefix}-result"),
        ],
    )


def checked_budget(value: Any) -> float | None:
    """The budget typed in, if it is a number within the bounds."""
    budget = finite_number(value)
    return budget if budget is not None and BUDGET_MIN_S <= budget <= BUDGET_MAX_S else None


def budget_warning() -> html.Div:
    return alert(f"Enter a time budget from {BUDGET_MIN_S} to {BUDGET_MAX_S} seconds.", "warning")


def job_of(store: Any) -> int | None:
    """The discovery run id kept in a page's store (anything else from the browser: None)."""
    return positive_int(store.get("run_id")) if isinstance(store, dict) else None


# ── rendering (pure) ──────────────────────────────────────────────────────────────────────


def progress_block(view: dict[str, Any]) -> list[Any]:
    """Status, time used of the budget and the share of the search done."""
    status = view.get("status")
    progress = view.get("progress") or {}
    elapsed, budget = progress.get("elapsed_s"), view.get("budget_s")
    fraction = finite_number(progress.get("fraction")) or 0.0
    items = [
        html.Div([html.Span("discovery run"), html.Span(str(view.get("run_id")))]),
        html.Div([html.Span("status"), status_badge(status, f"{view.get('prefix', '')}status")]),
        html.Div([html.Span("search done"), html.Span(f"{fraction:.0%}")]),
        html.Div(
            [
                html.Span("time"),
                html.Span(f"{fmt_number(elapsed, 3)} s of {fmt_number(budget, 3)} s"),
            ]
        ),
        html.Div([html.Span("target"), html.Span(str(view.get("target") or ""))]),
    ]
    children: list[Any] = [html.Div(items, className="kv")]
    if status in ("queued", "running"):
        used = 0.0
        if isinstance(elapsed, int | float) and isinstance(budget, int | float) and budget > 0:
            used = min(1.0, max(float(elapsed) / float(budget), fraction))
        children.append(
            html.Progress(
                value=str(round(used * 100)),
                max="100",
                style={"width": "100%"},
                title="time used of the budget",
            )
        )
        if status == "queued":
            children.append(html.Div("Waiting for a free worker…", className="muted small"))
    if view.get("error"):
        children.append(alert(view["error"], "danger"))
    return children


def _front_rows(front: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "complexity": f.get("complexity"),
            "val_r2": fmt_number(f.get("val_r2")),
            "r2": fmt_number(f.get("r2")),
            "val_rmse": fmt_number(f.get("val_rmse")),
            "formula": f.get("formula"),
            "source": f.get("source"),
            "chosen": "yes" if f.get("chosen") else "",
        }
        for f in front
        if isinstance(f, dict)
    ]


def comparison_items(view: dict[str, Any]) -> list[Any]:
    """The formula's held-out R² next to the networks' on the same rows."""
    result = view.get("result") or {}
    chosen = result.get("formula") or {}
    held_out = chosen.get("val_r2")
    items = [
        html.Div(
            [
                html.Span("formula R² (held-out)"),
                html.Span(fmt_number(held_out), className="discovery-r2"),
            ]
        )
    ]
    for run in view.get("comparison") or []:
        if not isinstance(run, dict):
            continue
        roles = [r for r in run.get("roles") or [] if isinstance(r, str)]
        label = f"{str(run.get('model', '')).upper()} run {run.get('run_id')}"
        if roles:
            label += f" ({', '.join(roles)})"
        items.append(
            html.Div([html.Span(label), html.Span(fmt_number(run.get("r2")), className="net-r2")])
        )
    if result.get("network_width"):
        items.append(
            html.Div(
                [
                    html.Span(f"search's KAN {result['network_width']} (search rows)"),
                    html.Span(fmt_number(result.get("network_r2"))),
                ]
            )
        )
    items.append(html.Div([html.Span("complexity"), html.Span(str(chosen.get("complexity")))]))
    items.append(
        html.Div(
            [
                html.Span("search time"),
                html.Span(
                    f"{fmt_number(result.get('seconds'), 3)} s of "
                    f"{fmt_number(result.get('budget_s'), 3)} s"
                ),
            ]
        )
    )
    return items


def result_block(view: dict[str, Any]) -> list[Any]:
    """The chosen formula (LaTeX), the R² comparison, the symbols and the Pareto front."""
    result = view.get("result")
    if not isinstance(result, dict):
        return []
    chosen = result.get("formula") or {}
    children: list[Any] = [
        html.Div(f"{view.get('target') or 'target'} ≈", className="muted small"),
        dcc.Markdown(
            figures.formula_markdown(str(chosen.get("latex") or "")),
            mathjax=True,
            className="formula-math discovery-formula",
        ),
        html.Code(str(chosen.get("formula") or ""), className="discovery-formula-text"),
        html.Div(comparison_items(view), className="kv"),
    ]
    if not view.get("comparison"):
        children.append(
            html.Div(
                "No finished KAN or MLP run scored on the same validation rows yet: train one "
                "on this dataset and target with the same seed and validation fraction to "
                "compare.",
                className="muted small",
            )
        )
    symbols = result.get("symbols") or {}
    renamed = {s: c for s, c in symbols.items() if s != c}
    if renamed:
        children.append(
            html.Div(
                "where " + ", ".join(f"{s} = {c}" for s, c in renamed.items()),
                className="muted small",
            )
        )
    for note in result.get("notes") or []:
        children.append(alert(str(note), "info"))
    children.append(html.Div("Pareto front (simplest first)", className="muted small"))
    children.append(
        data_table(
            id=f"{view.get('prefix', '')}front",
            columns=FRONT_COLUMNS,
            data=_front_rows(result.get("front") or []),
            page_size=12,
            style_table={"overflowX": "auto"},
            style_cell={"fontSize": 12, "padding": "3px 6px", "textAlign": "left"},
            style_header={"fontWeight": 600},
            style_data_conditional=[
                {"if": {"filter_query": '{chosen} = "yes"'}, "fontWeight": 700}
            ],
        )
    )
    return children


def render(prefix: str, view: Any) -> tuple[list[Any], list[Any], bool, bool]:
    """(progress, result, interval disabled, stop disabled) for a discovery view."""
    if not isinstance(view, dict):
        return [], [], True, True
    view = view | {"prefix": f"{prefix}-"}
    done = view.get("status") in TERMINAL_STATUSES
    return progress_block(view), result_block(view), done, done


# ── callbacks shared by both pages ────────────────────────────────────────────────────────


def _register_polling(prefix: str) -> None:
    @callback(
        Output(f"{prefix}-progress", "children"),
        Output(f"{prefix}-result", "children"),
        Output(f"{prefix}-interval", "disabled", allow_duplicate=True),
        Output(f"{prefix}-stop", "disabled"),
        Input(f"{prefix}-interval", "n_intervals"),
        Input(f"{prefix}-job", "data"),
        prevent_initial_call=True,
    )
    def poll(_n, job):
        run_id = job_of(job)
        if run_id is None:
            return [], [], True, True
        try:
            view = api_client.run_discovery(run_id)
        except ApiError as exc:
            stop = exc.status_code == 404  # the run was deleted: nothing left to poll
            return error_alert(exc, "Reading the discovery"), no_update, stop, no_update
        return render(prefix, view)

    @callback(
        Output(f"{prefix}-alert", "children", allow_duplicate=True),
        Output(f"{prefix}-stop", "disabled", allow_duplicate=True),
        Input(f"{prefix}-stop", "n_clicks"),
        State(f"{prefix}-job", "data"),
        prevent_initial_call=True,
    )
    def stop(_clicks, job):
        run_id = job_of(job)
        if not user_clicked() or run_id is None:
            return no_update, no_update
        try:
            api_client.cancel_run(run_id)
        except ApiError as exc:
            return error_alert(exc, "Stopping the discovery"), no_update
        return (
            alert("Stop requested: the best formula found so far is kept.", "info", role="status"),
            True,
        )


def _started(run: dict[str, Any]) -> tuple[Any, Any, bool, Any]:
    run_id = run["id"]
    link = dcc.Link(
        f"Open discovery run {run_id} →", href=f"/runs/{run_id}", className="button secondary"
    )
    return (
        {"run_id": run_id},
        alert(f"Discovery run {run_id} queued.", "success", role="status"),
        False,
        link,
    )


for _prefix in (RUN_PAGE, TRAIN_PAGE):
    _register_polling(_prefix)


# ── run page: a discovery for the open run (or the run itself when it is one) ─────────────


@callback(
    Output(f"{RUN_PAGE}-job", "data"),
    Output(f"{RUN_PAGE}-interval", "disabled"),
    Input("run-info", "data"),
    State("run-id", "data"),
    State(f"{RUN_PAGE}-job", "data"),
)
def show_existing(info, run_id, job):
    """Once the run page has loaded its run (``run-info``): the run's own result when it is a
    discovery, else the newest discovery started for it (if any). Later changes of the run's
    status keep a discovery already shown."""
    run_id = positive_int(run_id)
    if run_id is None or not isinstance(info, dict):
        return no_update, no_update
    if job_of(job) is not None:
        return no_update, no_update
    if info.get("model") == "discover":
        return {"run_id": run_id}, False
    try:
        child = api_client.latest_discovery_of(run_id)
    except ApiError:
        return no_update, no_update  # the page's own header shows what went wrong
    child_id = positive_int(child.get("id")) if isinstance(child, dict) else None
    return ({"run_id": child_id}, False) if child_id is not None else (no_update, no_update)


@callback(
    Output(f"{RUN_PAGE}-job", "data", allow_duplicate=True),
    Output(f"{RUN_PAGE}-alert", "children"),
    Output(f"{RUN_PAGE}-interval", "disabled", allow_duplicate=True),
    Output(f"{RUN_PAGE}-link", "children"),
    Input(f"{RUN_PAGE}-start", "n_clicks"),
    State(f"{RUN_PAGE}-budget", "value"),
    State("run-id", "data"),
    prevent_initial_call=True,
    running=[(Output(f"{RUN_PAGE}-start", "disabled"), True, False)],
)
def start_for_run(_clicks, budget, run_id):
    run_id = positive_int(run_id)
    if not user_clicked() or run_id is None:
        return no_update, no_update, no_update, no_update
    budget = checked_budget(budget)
    if budget is None:
        return no_update, budget_warning(), no_update, no_update
    try:
        run = api_client.discover_formula(run_id, budget, idempotency_key=str(uuid.uuid4()))
    except ApiError as exc:
        return no_update, error_alert(exc, "Starting the discovery"), no_update, no_update
    return _started(run)


# ── Train page: a discovery for the chosen dataset, target and features ───────────────────


def train_page_body(selection: Any, budget: float, seed: Any, val: Any, name: Any) -> dict:
    """``POST /runs`` body of a discovery with the Train page's choices; the seed and
    validation fraction are the form's, so a KAN trained with them holds out the same rows.
    Raises ValueError with a message to show."""
    dataset_id = positive_int(selection.get("dataset_id")) if isinstance(selection, dict) else None
    target = selection.get("target") if isinstance(selection, dict) else None
    if dataset_id is None or not isinstance(target, str) or not target:
        raise ValueError("Choose a dataset and target on the Datasets page first.")
    if selection.get("task", "regression") != "regression":
        raise ValueError("Formula discovery fits a numeric target: choose task regression.")
    features = selection.get("features")
    if features is not None and not (
        isinstance(features, list) and all(isinstance(f, str) for f in features)
    ):
        raise ValueError("The feature selection is not a list of column names; choose again.")
    seed_value = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    if seed_value is not None and not 0 <= seed_value <= 2**31 - 1:
        seed_value = None
    fraction = finite_number(val)
    if seed_value is None or fraction is None or not 0 <= fraction <= 0.9:
        raise ValueError("Seed and validation fraction (0–0.9) must be valid numbers.")
    body: dict[str, Any] = {
        "dataset_id": dataset_id,
        "target_columns": [target],
        "feature_columns": features or None,
        "task": "regression",
        "model": "discover",
        "seed": seed_value,
        "val_fraction": fraction,
        "model_options": {"budget_s": budget},
    }
    if isinstance(name, str) and name.strip():
        body["name"] = name.strip()[:200]
    return body


@callback(
    Output(f"{TRAIN_PAGE}-job", "data"),
    Output(f"{TRAIN_PAGE}-alert", "children"),
    Output(f"{TRAIN_PAGE}-interval", "disabled"),
    Output(f"{TRAIN_PAGE}-link", "children"),
    Input(f"{TRAIN_PAGE}-start", "n_clicks"),
    State(f"{TRAIN_PAGE}-budget", "value"),
    State("selection-store", "data"),
    State("tr-seed", "value"),
    State("tr-val", "value"),
    State("tr-name", "value"),
    prevent_initial_call=True,
    running=[(Output(f"{TRAIN_PAGE}-start", "disabled"), True, False)],
)
def start_for_selection(_clicks, budget, selection, seed, val, name):
    if not user_clicked():
        return no_update, no_update, no_update, no_update
    budget = checked_budget(budget)
    if budget is None:
        return no_update, budget_warning(), no_update, no_update
    try:
        body = train_page_body(selection, budget, seed, val, name)
    except ValueError as exc:
        return no_update, alert(str(exc), "warning"), no_update, no_update
    try:
        run = api_client.create_run(body, idempotency_key=str(uuid.uuid4()))
    except ApiError as exc:
        return no_update, error_alert(exc, "Starting the discovery"), no_update, no_update
    return _started(run)
