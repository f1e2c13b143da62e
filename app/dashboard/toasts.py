"""Notifications that stay: a callback returns ``toast(text)`` into the app-wide ``toast`` store
and the browser shows it in the corner for ``TOAST_MS`` (``kanscope.showToast`` in
``frontend_assets/kanscope.js``), whatever the page redraws meanwhile; several stack."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from dash import ClientsideFunction, Input, Output, clientside_callback, dcc, html

from app.dashboard.components import attrs

#: how long a notification stays on screen (the issue asks for at least 3 s)
TOAST_MS = 6000

ToastKind = Literal["success", "info", "warning", "danger"]


def toast(text: str, kind: ToastKind = "success") -> dict[str, Any]:
    """The value a callback writes to ``Output("toast", "data", allow_duplicate=True)``; the id
    makes two equal messages two notifications."""
    return {"text": str(text), "kind": kind, "id": uuid.uuid4().hex, "ms": TOAST_MS}


def toast_area() -> list[Any]:
    """The store and the corner the notifications appear in (in the app shell)."""
    return [
        dcc.Store(id="toast", data=None),
        dcc.Store(id="toast-shown", data=None),
        html.Div(id="toasts", className="toasts", role="status", **attrs({"aria-live": "polite"})),
    ]


clientside_callback(
    ClientsideFunction(namespace="kanscope", function_name="showToast"),
    Output("toast-shown", "data"),
    Input("toast", "data"),
    prevent_initial_call=True,
)
