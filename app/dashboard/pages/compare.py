"""Compare: two to five runs side by side, as MLflow does — the settings that differ
(highlighted; the shared ones folded away), metrics, overlaid loss curves and formulas."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, callback, dcc, html

from app.dashboard import api_client, figures
from app.dashboard.api_client import ApiError
from app.dashboard.components import alert, attrs, data_table, fmt_number, formula_math
from app.dashboard.messages import rows_used, shorten
from app.dashboard.validation import positive_int, positive_ints

dash.register_page(__name__, path="/compare", name="Compare", title="Compare · kanscope")

MAX_RUNS = 5
#: config keys left out of the diff (long row lists are summarised instead)
ROW_LISTS = ("train_rows", "val_rows")


def parse_run_ids(text: str | None) -> list[int]:
    """Run ids from ``?runs=3,5``; anything that is not an id is left out."""
    parts = text.split(",") if isinstance(text, str) else []
    ids = [positive_int(p.strip()) for p in parts]
    return [i for i in ids if i is not None][:MAX_RUNS]


def layout(runs: str | None = None, **_: Any) -> html.Div:
    options, error = run_options()
    known = {o["value"] for o in options}
    return html.Div(
        [
            html.H2("Compare runs"),
            html.Div(
                className="card",
                children=[
                    dcc.Dropdown(
                        id="cmp-runs",
                        multi=True,
                        options=options,
                        value=[r for r in parse_run_ids(runs) if r in known],
                        placeholder="Choose two or more runs…",
                    ),
                    alert(f"Could not list runs: {error}") if error else None,
                ],
            ),
            dcc.Loading(html.Div(id="cmp-body")),
        ]
    )


def config_value(key: str, value: Any) -> str:
    """One config value as a short readable cell."""
    if value is None:
        return "–"
    if key in ROW_LISTS and isinstance(value, list):
        return f"{len(value):,} rows"
    if isinstance(value, list):
        text = ", ".join(str(v) for v in value)
        return f"{len(value)}: {shorten(text, 120)}" if key == "feature_columns" else text
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "–"
    return str(value)


def config_diff(runs: list[dict[str, Any]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(differing, same)``: one row per config key (``{"setting": key, "<run id>": value}``),
    the keys whose values differ between the runs, then those all runs share."""
    configs = [(str(r["id"]), r.get("config") or {}) for r in runs]
    keys = sorted({k for _, c in configs for k in c})
    differing: list[dict[str, Any]] = []
    same: list[dict[str, Any]] = []
    for key in keys:
        row = {"setting": key} | {rid: config_value(key, c.get(key)) for rid, c in configs}
        values = {row[rid] for rid, _ in configs}
        (differing if len(values) > 1 else same).append(row)
    return differing, same


def diff_table(runs: list[dict[str, Any]]) -> html.Div:
    """The settings that differ (highlighted), and those that do not, folded."""
    differing, same = config_diff(runs)
    ids = [str(r["id"]) for r in runs]

    def table(rows: list[dict[str, str]], row_class: str, table_id: str) -> html.Table:
        head = html.Tr([html.Th("setting")] + [html.Th(f"run {i}") for i in ids])
        body = [
            html.Tr(
                [html.Td(r["setting"])] + [html.Td(r[i]) for i in ids],
                className=row_class,
                **attrs({"data-setting": r["setting"]}),
            )
            for r in rows
        ]
        return html.Table([html.Thead(head), html.Tbody(body)], id=table_id, className="diff")

    children: list[Any] = [html.H3("Settings")]
    if differing:
        children.append(table(differing, "differs", "cmp-diff"))
    else:
        children.append(html.Div("All settings are the same.", className="muted", id="cmp-diff"))
    if same:
        children.append(
            html.Details(
                [
                    html.Summary(f"{len(same)} settings shared by every run"),
                    table(same, "", "cmp-same"),
                ]
            )
        )
    return html.Div(children, className="card scroll-x")


def run_options() -> tuple[list[dict[str, Any]], str | None]:
    """Options for the run picker, built with the page (a value whose option is not there yet
    would be dropped by the dropdown)."""
    try:
        runs = api_client.list_runs()
    except ApiError as exc:
        return [], str(exc)
    options = [
        {
            "label": f"run {r['id']} · {r.get('model')} · {r.get('status')}"
            + (" · edited" if r.get("edited") else "")
            + (f" · {r['name']}" if r.get("name") else ""),
            "value": r["id"],
        }
        for r in runs
    ]
    return options, None


def metrics_table(
    runs: list[dict[str, Any]],
    formulas: dict[int, dict | None],
    dataset_names: dict[int, str],
) -> Any:
    def summary(run: dict[str, Any], key: str) -> Any:
        return (run.get("summary") or {}).get(key)

    def first_output(run: dict[str, Any]) -> dict[str, Any]:
        """The run's formula for its first output ({} without one)."""
        return ((formulas.get(run["id"]) or {}).get("outputs") or [{}])[0]

    rows_spec = [
        ("status", lambda r: r.get("status") + (" · edited" if r.get("edited") else "")),
        ("dataset", lambda r: dataset_names.get(r.get("dataset_id"), r.get("dataset_id"))),
        ("model", lambda r: r.get("model")),
        ("width", lambda r: str(summary(r, "width") or "")),
        ("parameters", lambda r: fmt_number(summary(r, "n_parameters"))),
        ("train loss", lambda r: fmt_number(summary(r, "train_loss"))),
        ("val loss", lambda r: fmt_number(summary(r, "val_loss"))),
        ("val R² / accuracy (kept model)", lambda r: fmt_number(summary(r, "val_metric"))),
        ("best step (kept)", lambda r: summary(r, "best_step") or ""),
        ("last step", lambda r: summary(r, "final_step") or ""),
        ("val loss at last step", lambda r: fmt_number(summary(r, "final_val_loss"))),
        ("stopped", lambda r: str(summary(r, "stopped_reason") or "").replace("_", " ")),
        ("rows used", lambda r: rows_used(r.get("summary") or {})),
        ("formula R² (training rows)", lambda r: fmt_number(first_output(r).get("r2"))),
        ("formula R² (validation rows)", lambda r: fmt_number(first_output(r).get("val_r2"))),
        (
            "symbolic edges",
            lambda r: (
                f"{f['n_symbolic_edges']} / {f['n_edges']}"
                if (f := formulas.get(r["id"])) and "n_edges" in f
                else "–"
            ),
        ),
    ]
    data = []
    for label, getter in rows_spec:
        row = {"metric": label}
        for run in runs:
            row[str(run["id"])] = getter(run)
        data.append(row)
    return data_table(
        id="cmp-table",
        data=data,
        columns=[{"name": "", "id": "metric"}]
        + [{"name": f"run {r['id']}", "id": str(r["id"])} for r in runs],
        style_cell={"fontSize": 13, "padding": "4px 8px", "textAlign": "left"},
        style_header={"fontWeight": 600},
    )


def run_formula(run: dict[str, Any]) -> dict[str, Any] | None:
    """A run's formula as the KAN formula endpoint gives it (``outputs`` with ``latex``, ``r2``
    on the training rows, ``val_r2`` on the validation rows): a KAN's from its edges, a
    discovery run's chosen one (scored on the validation rows only); None for other runs or
    when it cannot be had."""
    run_id, model = run["id"], run.get("model")
    try:
        if model == "kan" and run.get("status") == "succeeded":
            return api_client.run_formula(run_id)
        if model == "discover":
            found = api_client.run_discovery(run_id)
            chosen = (found.get("result") or {}).get("formula")
            if not chosen:
                return None
            output = {"latex": chosen.get("latex"), "r2": None, "val_r2": found.get("val_r2")}
            return {"outputs": [output], "complexity": chosen.get("complexity")}
    except ApiError:
        return None
    return None


@callback(Output("cmp-body", "children"), Input("cmp-runs", "value"))
def compare(run_ids: list[int] | None):
    chosen = run_ids if isinstance(run_ids, list) else []
    run_ids = positive_ints(chosen[:MAX_RUNS], MAX_RUNS) or []
    if len(run_ids) < 2:
        return alert("Choose two to five runs to compare.", "info")
    runs, errors, series = [], [], []
    formulas: dict[int, dict | None] = {}
    for run_id in run_ids:
        try:
            run = api_client.get_run(run_id)
            metrics = api_client.run_metrics(run_id)
        except ApiError as exc:
            errors.append(f"run {run_id}: {exc}")
            continue
        runs.append(run)
        series.append((f"run {run_id}", metrics.get("points") or []))
        formulas[run_id] = run_formula(run)
    children: list[Any] = []
    if len(chosen) > MAX_RUNS:
        children.append(
            alert(f"Compare at most {MAX_RUNS} runs: the first five are shown.", "warning")
        )
    if errors:
        children.append(alert("; ".join(errors), "warning"))
    if not runs:
        return children
    try:
        names = {d["id"]: d["name"] for d in api_client.list_datasets()}
    except ApiError:
        names = {}
    children.append(diff_table(runs))
    children.append(html.Div(metrics_table(runs, formulas, names), className="card scroll-x"))
    children.append(
        html.Div(
            dcc.Graph(
                id="cmp-loss",
                figure=figures.compare_loss_figure(series),
                config={"displaylogo": False},
            ),
            className="card",
        )
    )
    formula_cards = []
    for run in runs:
        formula = formulas.get(run["id"])
        body: list[Any] = [html.H3(dcc.Link(f"run {run['id']}", href=f"/runs/{run['id']}"))]
        if formula:
            for output in formula.get("outputs") or []:
                body.append(formula_math(str(output.get("latex") or ""), class_name=None))
                scores = (
                    f"R² {fmt_number(output.get('r2'))} on the training rows, "
                    f"{fmt_number(output.get('val_r2'))} on the validation rows"
                )
                body.append(html.Div(scores, className="muted formula-scores"))
        else:
            body.append(html.Div("No formula for this run.", className="muted"))
        formula_cards.append(html.Div(body, className="col card formula"))
    children.append(html.Div(formula_cards, className="row"))
    return children
