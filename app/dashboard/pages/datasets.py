"""Datasets: drag-and-drop CSV upload, preview, per-column stats, choose target/features/task,
featurise an alloy composition column into a new dataset version."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html, no_update
from dash.dash_table.DataTable import DataTable

from app.dashboard import api_client
from app.dashboard.api_client import ApiError
from app.dashboard.components import (
    TASKS,
    alert,
    data_table,
    decode_upload,
    error_alert,
    field,
    fmt_number,
    task_radio,
    user_clicked,
)
from app.dashboard.data_check import (
    default_features,
    plural,
    readable_name,
    row_check_text,
)
from app.dashboard.feature_picker import feature_checklist, register_feature_picker
from app.dashboard.forms import initial_selection, upload_warnings
from app.dashboard.validation import one_of, positive_int

dash.register_page(__name__, path="/", name="Datasets", title="Datasets · kanscope")

PREVIEW_ROWS = 20


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Datasets"),
            dcc.Store(id="ds-version", data=0),
            html.Div(
                className="row",
                children=[
                    html.Div(
                        className="col card",
                        children=[
                            html.H3("Upload a CSV"),
                            dcc.Upload(
                                id="ds-upload",
                                className="upload-zone",
                                multiple=False,
                                children=html.Div(
                                    [
                                        "Drag and drop a CSV file here, or ",
                                        html.A("choose a file", className="link"),
                                        html.Div(
                                            "Comma-separated, header row first, numeric "
                                            "feature columns.",
                                            className="muted small",
                                        ),
                                    ]
                                ),
                            ),
                            dcc.Loading(html.Div(id="ds-upload-alert"), type="dot"),
                        ],
                    ),
                    html.Div(
                        className="col card",
                        children=[
                            html.H3("Stored datasets"),
                            dcc.Dropdown(
                                id="ds-select",
                                placeholder="Choose a dataset…",
                                clearable=False,
                            ),
                            html.Div(id="ds-summary", className="kv"),
                            html.Div(
                                className="actions",
                                children=[
                                    html.Button(
                                        "Delete dataset", id="ds-delete", className="secondary"
                                    ),
                                ],
                            ),
                            html.Div(id="ds-delete-alert"),
                            # a dataset with finished runs: deleted with them once confirmed
                            dcc.ConfirmDialog(id="ds-delete-confirm"),
                            dcc.Store(id="ds-delete-pending", data=None),
                        ],
                    ),
                ],
            ),
            featurise_card(),
            html.Div(
                id="ds-detail",
                className="card",
                children=[
                    html.H3("What to learn"),
                    html.Div(
                        className="row",
                        children=[
                            html.Div(
                                field(
                                    "Target column",
                                    dcc.Dropdown(id="ds-target", clearable=False),
                                    "The column the model predicts.",
                                ),
                                className="col",
                            ),
                            html.Div(
                                field(
                                    "Task",
                                    task_radio("ds-task"),
                                    "Regression predicts a number; classification a label.",
                                ),
                                className="col",
                            ),
                            html.Div(
                                html.Button("Train on this dataset →", id="ds-to-train"),
                                className="col",
                                style={"textAlign": "right", "paddingTop": "16px"},
                            ),
                        ],
                    ),
                    feature_checklist(
                        "ds",
                        "Inputs of the model. Non-numeric columns cannot be features. "
                        "Identifiers, years, references, mostly empty columns and other measured "
                        "properties start unticked (the reason is shown next to them).",
                    ),
                    html.Div(id="ds-row-check", role="status"),
                    html.Div(id="ds-role-alert"),
                ],
            ),
            html.Div(
                className="card",
                children=[
                    html.H3("Column statistics"),
                    html.Div(id="ds-stats", className="scroll-x"),
                ],
            ),
            html.Div(
                className="card",
                children=[
                    html.H3(id="ds-preview-title", children="Preview"),
                    html.Div(id="ds-preview", className="scroll-x"),
                ],
            ),
        ]
    )


@callback(
    Output("ds-upload-alert", "children"),
    Output("ds-version", "data"),
    Output("ds-select", "value", allow_duplicate=True),
    Input("ds-upload", "contents"),
    State("ds-upload", "filename"),
    State("ds-version", "data"),
    prevent_initial_call=True,
)
def upload_dataset(contents: str | None, filename: str | None, version: int):
    if not contents or not isinstance(contents, str):
        return no_update, no_update, no_update
    filename = filename if isinstance(filename, str) and filename else "upload.csv"
    try:
        content = decode_upload(contents)
    except ValueError as exc:
        return alert(str(exc)), no_update, no_update
    if not content.strip():
        return (
            alert(f"{filename} is empty: choose a CSV file with a header and rows."),
            (no_update),
            no_update,
        )
    try:
        dataset = api_client.upload_dataset(filename, content)
    except ApiError as exc:
        return error_alert(exc, f"Uploading {filename}"), no_update, no_update
    message = (
        f"Stored {filename} as “{dataset['name']}”: {plural(dataset['n_rows'], 'row')} × "
        f"{plural(dataset['n_columns'], 'column')}."
    )
    warnings = upload_warnings(dataset)
    if warnings:
        body = html.Div([html.Div(message), html.Ul([html.Li(w) for w in warnings])])
        return alert(body, "warning"), next_version(version), dataset["id"]
    return alert(message, "success", role="status"), next_version(version), dataset["id"]


def next_version(version: Any) -> int:
    """The ``ds-version`` store bumped (a client-side store: anything but an int counts as 0)."""
    return (version if isinstance(version, int) and not isinstance(version, bool) else 0) + 1


@callback(
    Output("ds-select", "options"),
    Output("ds-select", "value"),
    Input("ds-version", "data"),
    State("ds-select", "value"),
    State("selection-store", "data"),
)
def list_datasets(_version: int, current: int | None, selection: dict | None):
    try:
        datasets = api_client.list_datasets()
    except ApiError as exc:
        return [{"label": f"(could not list datasets: {exc})", "value": -1, "disabled": True}], None
    options = [
        {
            "label": f"{d['name']} — {plural(d['n_rows'], 'row')} × "
            f"{plural(d['n_columns'], 'col')}",
            "value": d["id"],
        }
        for d in datasets
    ]
    ids = [d["id"] for d in datasets]
    if current in ids:
        return options, current
    remembered = (selection or {}).get("dataset_id")
    if remembered in ids:
        return options, remembered
    return options, (max(ids) if ids else None)


def stats_table(stats: list[dict[str, Any]], notes: dict[str, str]) -> DataTable:
    """Per column: type, missing, range; ``notes`` says why a column starts unticked."""
    rows = [
        {
            "column": readable_name(s["name"]),
            "type": s.get("kind", ""),
            "dtype": s.get("dtype", ""),
            "missing": s.get("n_missing"),
            "unique": s.get("n_unique"),
            "mean": fmt_number(s.get("mean")),
            "std": fmt_number(s.get("std")),
            "min": fmt_number(s.get("min")),
            "max": fmt_number(s.get("max")),
            "top values": ", ".join((s.get("top_values") or [])[:5]),
            "default": notes.get(s["name"], ""),
        }
        for s in stats
    ]
    columns = ["column", "type", "dtype", "missing", "unique", "mean", "std", "min", "max"]
    if notes:
        columns.append("default")
    if any(r["top values"] for r in rows):
        columns.append("top values")
    return data_table(
        id="ds-stats-table",
        data=rows,
        columns=[{"name": c, "id": c} for c in columns],
        page_size=12,
        sort_action="native",
        style_table={"overflowX": "auto"},
        style_cell={"fontSize": 12, "padding": "3px 6px", "textAlign": "left"},
        style_header={"fontWeight": 600},
    )


def preview_table(columns: list[str], rows: list[list[Any]]) -> DataTable:
    ids = [f"c{k}" for k in range(len(columns))]
    data = [
        {cid: ("" if v is None else v) for cid, v in zip(ids, row, strict=False)} for row in rows
    ]
    return data_table(
        id="ds-preview-table",
        data=data,
        columns=[
            {"name": readable_name(name), "id": cid} for name, cid in zip(columns, ids, strict=True)
        ],
        style_table={"overflowX": "auto"},
        style_cell={"fontSize": 12, "padding": "3px 6px", "minWidth": 60, "maxWidth": 160},
        # headers wrap to as many lines as they need ("PROPERTY: HV" whole, not "PROPERTY")
        style_header={"fontWeight": 600, "whiteSpace": "normal", "height": "auto"},
    )


@callback(
    Output("ds-summary", "children"),
    Output("ds-stats", "children"),
    Output("ds-preview", "children"),
    Output("ds-preview-title", "children"),
    Output("ds-target", "options"),
    Output("ds-target", "value"),
    Output("ds-features", "options"),
    Output("ds-features", "value"),
    Output("ds-task", "value"),
    Input("ds-select", "value"),
    State("selection-store", "data"),
)
def show_dataset(dataset_id: int | None, selection: dict | None):
    empty: tuple[Any, ...] = (
        [],
        html.Div("No dataset selected.", className="muted"),
        "",
        "Preview",
    )
    dataset_id = positive_int(dataset_id)
    if dataset_id is None:
        return *empty, [], None, [], [], no_update
    try:
        preview = api_client.dataset_preview(dataset_id, limit=PREVIEW_ROWS)
    except ApiError as exc:
        return (
            [],
            error_alert(exc, "Loading the dataset"),
            "",
            "Preview",
            [],
            None,
            [],
            [],
            no_update,
        )
    stats = preview.get("stats") or []
    numeric = [s["name"] for s in stats if s.get("kind") == "numeric"]
    names = [s["name"] for s in stats]
    n_rows = int(preview.get("n_rows") or 0)
    summary = [
        html.Div([html.Span("rows"), html.Span(f"{n_rows:,}")]),
        html.Div([html.Span("columns"), html.Span(str(len(names)))]),
        html.Div([html.Span("numeric"), html.Span(str(len(numeric)))]),
    ]
    target, features, task = initial_selection(stats, selection, dataset_id, n_rows)
    _, notes = default_features(stats, target, n_rows)
    return (
        summary,
        stats_table(stats, {n: f"unticked: {reason}" for n, reason in notes.items()}),
        preview_table(preview.get("columns") or names, preview.get("rows") or []),
        f"Preview (first {plural(min(PREVIEW_ROWS, n_rows), 'row')} of {n_rows:,})",
        [{"label": readable_name(n), "value": n} for n in names],
        target,
        feature_options(numeric, target, notes),
        features,
        task,
    )


def feature_options(numeric: list[str], target: str | None, notes: dict[str, str]) -> list[dict]:
    """Checklist options: readable names, the reason a column starts unticked beside it."""
    options = []
    for name in numeric:
        label = f" {readable_name(name)}" + (f" — {notes[name]}" if name in notes else "")
        options.append({"label": label, "value": name, "disabled": name == target})
    return options


register_feature_picker("ds")


def check_rows(dataset_id: Any, target: Any, features: Any, task: Any) -> tuple[str, str] | None:
    """(alert kind, text) of the data check for this choice; None when there is nothing to
    check yet. Raises ApiError."""
    dataset_id = positive_int(dataset_id)
    if dataset_id is None or not isinstance(target, str) or not target:
        return None
    features = [f for f in features or [] if isinstance(f, str) and f != target]
    task = one_of(task, TASKS) or "regression"
    return row_check_text(api_client.row_check(dataset_id, target, features, task))


@callback(
    Output("ds-row-check", "children"),
    Input("ds-target", "value"),
    Input("ds-features", "value"),
    Input("ds-task", "value"),
    State("ds-select", "value"),
)
def show_row_check(target, features, task, dataset_id):
    """Rows left after dropping missing values for the current choice, updated live."""
    try:
        checked = check_rows(dataset_id, target, features, task)
    except ApiError as exc:
        return error_alert(exc, "Checking the rows")
    if checked is None:
        return None
    kind, text = checked
    return alert(text, kind, role="status")


@callback(
    Output("selection-store", "data"),
    Output("nav-location", "href", allow_duplicate=True),
    Output("ds-role-alert", "children"),
    Input("ds-to-train", "n_clicks"),
    State("ds-select", "value"),
    State("ds-target", "value"),
    State("ds-features", "value"),
    State("ds-task", "value"),
    State("ds-select", "options"),
    prevent_initial_call=True,
)
def go_to_train(_clicks, dataset_id, target, features, task, options):
    if not user_clicked():
        return no_update, no_update, no_update
    dataset_id = positive_int(dataset_id)
    if dataset_id is None:
        return no_update, no_update, alert("Upload or choose a dataset first.", "warning")
    if not target:
        return no_update, no_update, alert("Choose the target column.", "warning")
    features = [f for f in features or [] if f != target]
    if not features:
        return no_update, no_update, alert("Choose at least one feature column.", "warning")
    task = one_of(task, TASKS)
    if task is None:
        return no_update, no_update, alert("Choose regression or classification.", "warning")
    try:
        kind, text = check_rows(dataset_id, target, features, task) or ("info", "")
    except ApiError as exc:
        return no_update, no_update, error_alert(exc, "Checking the rows")
    if kind == "danger":  # the data check above names the columns to untick
        refused = "Too few complete rows to train on: untick the columns named above."
        return no_update, no_update, alert(refused, "danger")
    label = next((o["label"] for o in options or [] if o["value"] == dataset_id), "")
    selection = {
        "dataset_id": dataset_id,
        "dataset_label": label,
        "target": target,
        "features": features,
        "task": task,
        "rows_checked": True,  # enough complete rows: the Train page need not check again
    }
    return selection, "/train", None


@callback(
    Output("ds-delete-alert", "children"),
    Output("ds-version", "data", allow_duplicate=True),
    Output("ds-select", "value", allow_duplicate=True),
    Output("ds-delete-confirm", "displayed"),
    Output("ds-delete-confirm", "message"),
    Output("ds-delete-pending", "data"),
    Input("ds-delete", "n_clicks"),
    State("ds-select", "value"),
    State("ds-version", "data"),
    prevent_initial_call=True,
)
def delete_dataset(_clicks, dataset_id, version):
    """No runs: deleted. Finished runs: a confirm dialog offers to delete them too. Queued or
    running runs: refused, saying to cancel them first."""
    nothing = (no_update,) * 3
    if not user_clicked():
        return *nothing, *nothing
    dataset_id = positive_int(dataset_id)
    if dataset_id is None:
        return alert("Choose a dataset to delete.", "warning"), *nothing[1:], *nothing
    try:
        runs = api_client.list_runs(dataset_id)
    except ApiError as exc:
        return error_alert(exc, "Listing the dataset's runs"), *nothing[1:], *nothing
    active = [r for r in runs if r.get("status") in ("queued", "running")]
    if active:
        ids = ", ".join(str(r["id"]) for r in active[:10])
        text = (
            f"Runs {ids} still use this dataset ({len(active)} queued or running). Cancel them "
            "(Runs page or the run's page) and wait for them to stop, then delete again."
        )
        return alert(text, "warning"), *nothing[1:], *nothing
    if runs:
        message = (
            f"This dataset is used by {len(runs)} finished run(s). Delete the dataset together "
            "with these runs (their metrics, models and formulas)? This cannot be undone."
        )
        return None, no_update, no_update, True, message, dataset_id
    return _delete(dataset_id, version, cascade=False)


@callback(
    Output("ds-delete-alert", "children", allow_duplicate=True),
    Output("ds-version", "data", allow_duplicate=True),
    Output("ds-select", "value", allow_duplicate=True),
    Input("ds-delete-confirm", "submit_n_clicks"),
    State("ds-delete-pending", "data"),
    State("ds-select", "value"),
    State("ds-version", "data"),
    prevent_initial_call=True,
)
def delete_dataset_with_runs(_confirmed, pending, dataset_id, version):
    pending, dataset_id = positive_int(pending), positive_int(dataset_id)
    if pending is None or pending != dataset_id:  # the choice changed under the dialog
        return alert("Nothing deleted: choose the dataset again.", "warning"), no_update, no_update
    return _delete(dataset_id, version, cascade=True)[:3]


def _delete(dataset_id: int, version: Any, *, cascade: bool) -> tuple[Any, ...]:
    try:
        api_client.delete_dataset(dataset_id, cascade=cascade)
    except ApiError as exc:
        return error_alert(exc, "Deleting the dataset"), no_update, no_update, False, "", None
    text = "Dataset and its runs deleted." if cascade else "Dataset deleted."
    done = alert(text, "success", role="status")
    return done, next_version(version), None, False, "", None


# ── Featurise composition (alloy workflow) ─────────────────────────────────────────────────

ELEMENTS = "__elements__"
NO_CHANGE = (no_update, no_update)
ERROR_POLICIES = [
    {"label": " list them and create nothing", "value": "fail"},
    {"label": " leave them out", "value": "drop"},
    {"label": " keep them with empty descriptors", "value": "keep"},
]


def featurise_card() -> html.Div:
    return html.Div(
        id="fz-card",
        className="card",
        children=[
            html.H3("Featurise composition"),
            html.Div(
                "Turn a column of alloy formulas (e.g. Al0.5CoCrFeNi) or element-amount columns "
                "into normalised element fractions plus VEC, δ, ΔSmix, ΔHmix, Tm, Δχ and Ω, as "
                "a new version of this dataset.",
                className="muted small",
            ),
            dcc.Store(id="fz-info"),
            html.Div(
                className="row",
                children=[
                    html.Div(
                        field(
                            "Composition column",
                            dcc.Dropdown(id="fz-column", clearable=False),
                            "Detected automatically; choose another column if it is wrong.",
                        ),
                        className="col",
                    ),
                    html.Div(
                        field(
                            "Rows that cannot be featurised",
                            dcc.RadioItems(id="fz-on-error", options=ERROR_POLICIES, value="fail"),
                            "Nothing is dropped silently: by default such rows are listed and "
                            "no dataset is created.",
                        ),
                        className="col",
                    ),
                    html.Div(
                        html.Button("Featurise composition", id="fz-run"),
                        className="col",
                        style={"textAlign": "right", "paddingTop": "16px"},
                    ),
                ],
            ),
            html.Div(id="fz-detected", className="muted small"),
            dcc.Loading(html.Div(id="fz-alert"), type="dot"),
            html.Div(id="fz-errors", className="scroll-x"),
        ],
    )


@callback(
    Output("fz-column", "options"),
    Output("fz-column", "value"),
    Output("fz-detected", "children"),
    Output("fz-info", "data"),
    Input("ds-select", "value"),
)
def show_composition(dataset_id: int | None):
    dataset_id = positive_int(dataset_id)
    if dataset_id is None:
        return [], None, "", None
    try:
        info = api_client.dataset_composition(dataset_id)
    except ApiError as exc:
        return [], None, error_alert(exc, "Looking for a composition column"), None
    options = [{"label": c, "value": c} for c in info.get("text_columns") or []]
    elements = info.get("element_columns") or {}
    if elements:
        label = (
            f"element columns ({', '.join(list(elements)[:6])}{'…' if len(elements) > 6 else ''})"
        )
        options.append({"label": label, "value": ELEMENTS})
    detected = info.get("detected")
    if detected and detected.get("kind") == "formula":
        value = detected.get("formula_column")
        note = f"Detected formula column: “{value}”."
    elif detected:
        value = ELEMENTS
        note = f"Detected {len(detected.get('element_columns') or {})} element-amount columns."
    else:
        value = options[0]["value"] if options else None
        note = info.get("problem") or "No composition column was detected."
    return options, value, note, {"element_columns": list(elements)}


def row_errors_table(errors: list[dict[str, Any]]) -> DataTable:
    return data_table(
        id="fz-errors-table",
        data=[
            {"row": e["row"], "line": e["line"], "value": e["value"], "reason": e["reason"]}
            for e in errors
        ],
        columns=[
            {"name": "row", "id": "row"},
            {"name": "CSV line", "id": "line"},
            {"name": "composition", "id": "value"},
            {"name": "reason", "id": "reason"},
        ],
        page_size=10,
        style_cell={"fontSize": 12, "padding": "3px 6px", "textAlign": "left"},
        style_header={"fontWeight": 600},
    )


@callback(
    Output("fz-alert", "children"),
    Output("fz-errors", "children"),
    Output("ds-version", "data", allow_duplicate=True),
    Output("ds-select", "value", allow_duplicate=True),
    Input("fz-run", "n_clicks"),
    State("ds-select", "value"),
    State("fz-column", "value"),
    State("fz-on-error", "value"),
    State("fz-info", "data"),
    State("ds-version", "data"),
    prevent_initial_call=True,
    running=[(Output("fz-run", "disabled"), True, False)],
)
def featurise(_clicks, dataset_id, column, on_error, info, version):
    if not user_clicked():
        return no_update, no_update, no_update, no_update
    dataset_id = positive_int(dataset_id)
    if dataset_id is None:
        return alert("Upload or choose a dataset first.", "warning"), None, no_update, no_update
    if not column or not isinstance(column, str):
        message = "Choose the column that holds the compositions."
        return alert(message, "warning"), None, no_update, no_update
    policy = one_of(on_error or "fail", [p["value"] for p in ERROR_POLICIES])
    if policy is None:
        return alert("Choose what to do with rows that fail.", "warning"), None, *NO_CHANGE
    body: dict[str, Any] = {"on_error": policy}
    if column == ELEMENTS:
        element_columns = (info if isinstance(info, dict) else {}).get("element_columns") or []
        body["element_columns"] = element_columns
    else:
        body["formula_column"] = column
    try:
        if body["on_error"] == "fail":  # list the bad rows first; create nothing if any
            report = api_client.featurise_dataset(dataset_id, body | {"dry_run": True})["report"]
            if report["n_errors"]:
                message = [
                    html.Strong(
                        f"{report['n_errors']} of {report['rows']:,} rows cannot be featurised"
                    ),
                    " (listed below). Nothing was created: fix them in the file, or choose to "
                    "leave them out or keep them with empty descriptors and click again.",
                ]
                if len(report["errors"]) < report["n_errors"]:
                    message.append(f" The first {len(report['errors'])} are listed.")
                return (
                    alert(message, "warning"),
                    row_errors_table(report["errors"]),
                    *(
                        no_update,
                        no_update,
                    ),
                )
        created = api_client.featurise_dataset(dataset_id, body)
    except ApiError as exc:
        return error_alert(exc, "Featurising"), None, no_update, no_update
    dataset, report = created["dataset"], created["report"]
    what = {"drop": "left out", "keep": "kept with empty descriptors"}.get(body["on_error"], "")
    message = [
        html.Strong(f"Created “{dataset['name']}”"),
        f": {report.get('rows_written', report['rows']):,} rows, "
        f"{len(report['fraction_columns'])} element fractions + "
        f"{', '.join(report['descriptor_columns'])}.",
    ]
    if report["n_errors"]:
        message.append(f" {report['n_errors']} row(s) with errors were {what} (listed below).")
    table = row_errors_table(report["errors"]) if report["n_errors"] else None
    if len(report["errors"]) < report["n_errors"]:
        message.append(f" The first {len(report['errors'])} are listed.")
    return alert(message, "success", role="status"), table, next_version(version), dataset["id"]
