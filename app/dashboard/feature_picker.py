"""Target + feature pickers shared by pages (layout and callbacks): the target is never also
a feature, and "all" / "none" buttons fill the feature list.
Ids: <prefix>-target, <prefix>-features, <prefix>-features-all, <prefix>-features-none."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, callback, ctx, dcc, html, no_update

from app.dashboard.components import field, user_clicked


def feature_checklist(prefix: str, help_text: str) -> html.Div:
    """The feature list with its "All numeric" / "None" buttons (ids as in the module doc)."""
    buttons = [
        html.Button("All numeric", id=f"{prefix}-features-all", className="secondary small"),
        html.Button("None", id=f"{prefix}-features-none", className="secondary small"),
    ]
    checklist = dcc.Checklist(id=f"{prefix}-features", className="checklist")
    return field(
        "Feature columns",
        html.Div([html.Div(className="actions", children=buttons), checklist]),
        help_text,
    )


def register_feature_picker(prefix: str) -> None:
    features = f"{prefix}-features"

    @callback(
        Output(features, "options", allow_duplicate=True),
        Output(features, "value", allow_duplicate=True),
        Input(f"{prefix}-target", "value"),
        State(features, "options"),
        State(features, "value"),
        prevent_initial_call=True,
    )
    def exclude_target(target: str | None, options: list[dict[str, Any]], value: list[str]):
        if not options:
            return no_update, no_update
        return (
            [{**o, "disabled": o["value"] == target} for o in options],
            [v for v in value or [] if v != target],
        )

    @callback(
        Output(features, "value", allow_duplicate=True),
        Input(f"{features}-all", "n_clicks"),
        Input(f"{features}-none", "n_clicks"),
        State(features, "options"),
        prevent_initial_call=True,
    )
    def all_or_no_features(_all: int | None, _none: int | None, options: list[dict[str, Any]]):
        if not user_clicked():
            return no_update
        if ctx.triggered_id == f"{features}-none":
            return []
        return [o["value"] for o in options or [] if not o.get("disabled")]
