"""Small layout pieces shared by the pages (alerts, badges, labelled fields)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from dash import dcc, html
from dash.dash_table.DataTable import DataTable

from app.dashboard.figures import formula_markdown

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
METRIC_LABELS = {"r2": "R²", "accuracy": "accuracy"}
TASKS = ("regression", "classification")
# Longer LaTeX is shown as source, not typeset. MathJax makes about one DOM node per character,
# and every later style and layout pass of the page pays for them: a [10, 16, 16, 1] KAN's
# partial formula (432 spline edges) is 149 000 characters, 150 000 nodes, 10-45 s of the
# browser's main thread to typeset, and made a click on an edge 450 ms instead of ~100 ms
# (benchmarks/results/dashboard_issue22_latency.md).
FORMULA_TYPESET_MAX_CHARS = 4000


def attrs(values: Mapping[str, Any]) -> dict[str, Any]:
    """HTML attributes Dash takes as keyword arguments but its typed signatures do not name
    (``data-*``, ``aria-*``): ``html.Div(..., **attrs({"data-model": name}))``."""
    return dict(values)


def data_table(**props: Any) -> DataTable:
    """A ``DataTable``. Its typed signature wants ``columns``/``data`` as its own TypedDicts;
    the pages build them as plain dicts, which is what Dash sends to the browser anyway."""
    return DataTable(**props)


def alert(message: Any, kind: str = "danger", *, role: str = "alert") -> html.Div:
    """A readable message box; ``kind`` is danger | warning | success | info."""
    return html.Div(message, className=f"alert alert-{kind}", role=role)


def formula_math(latex: str, class_name: str | None = "formula-math") -> html.Div | dcc.Markdown:
    """A formula typeset by MathJax, or, beyond ``FORMULA_TYPESET_MAX_CHARS``, a note and its
    LaTeX source folded away (a closed ``<details>`` costs the page nothing)."""
    text = (latex or "").strip()
    if len(text) <= FORMULA_TYPESET_MAX_CHARS:
        return dcc.Markdown(formula_markdown(text), mathjax=True, className=class_name)
    return html.Div(
        [
            html.Div(
                f"Too long to typeset ({len(text):,} characters of LaTeX). Prune edges or make "
                "them symbolic for a shorter formula.",
                className="muted formula-too-long",
            ),
            html.Details(
                [html.Summary("LaTeX source"), html.Pre(text, className="formula-source")]
            ),
        ],
        className=class_name,
    )


def error_alert(error: Exception, action: str) -> html.Div:
    return alert([html.Strong(f"{action} failed: "), str(error)], "danger")


def status_badge(status: str | None, element_id: str | None = None) -> html.Span:
    status = status or "unknown"
    props: dict[str, Any] = {"className": f"badge badge-{status}"}
    if element_id:
        props["id"] = element_id
    return html.Span(status, **props)


def field(label: str, control: Any, help_text: str | None = None) -> html.Div:
    """A form row: label (with a hover tooltip when ``help_text``) above its control."""
    children: list[Any] = [label]
    if help_text:
        children.append(html.Span("?", className="help", title=help_text))
    return html.Div(
        [html.Label(children, title=help_text or None), control],
        className="field",
    )


def task_radio(element_id: str) -> dcc.RadioItems:
    """Regression / classification choice (regression preselected)."""
    return dcc.RadioItems(
        id=element_id,
        options=[{"label": f" {task}", "value": task} for task in TASKS],
        value="regression",
        inline=True,
    )


def fmt_number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number != number:  # NaN
        return "–"
    if number != 0 and (abs(number) >= 1e5 or abs(number) < 1e-3):
        return f"{number:.{digits - 1}e}"
    return f"{number:.{digits}g}"


def user_clicked() -> bool:
    """True when a button really was clicked. Dash also runs a callback when a page inserts its
    inputs (``n_clicks`` None), even with ``prevent_initial_call``."""
    from dash import ctx

    return any(t.get("value") for t in ctx.triggered)


def decode_upload(contents: str) -> bytes:
    """``dcc.Upload`` gives ``data:<mime>;base64,<payload>``."""
    try:
        _, payload = contents.split(",", 1)
        return base64.b64decode(payload, validate=False)
    except (ValueError, binascii.Error):
        raise ValueError("The browser sent the file in a form that could not be read.") from None
