"""The shell around every page: navigation bar, page container and app-wide stores."""

from __future__ import annotations

import logging

import dash
from dash import dcc, html

from app.dashboard.components import alert

log = logging.getLogger(__name__)

NAV_LINKS = (
    ("Datasets", "/"),
    ("Train", "/train"),
    ("Runs", "/runs"),
    ("Compare", "/compare"),
    ("Leaderboard", "/leaderboard"),
)


def app_shell() -> html.Div:
    return html.Div(
        className="app",
        children=[
            html.Header(
                className="topbar",
                children=[
                    dcc.Link("kanscope", href="/", className="brand"),
                    html.Nav(
                        [
                            dcc.Link(label, href=href, className="nav-link")
                            for label, href in NAV_LINKS
                        ]
                    ),
                ],
            ),
            # Dataset / target / features / task chosen on Datasets and read by Train. Session
            # storage: a reload keeps it, two tabs do not fight.
            dcc.Store(id="selection-store", storage_type="session"),
            # Callbacks navigate by setting href here (no full page reload).
            dcc.Location(id="nav-location", refresh="callback-nav"),
            html.Div(id="global-alert"),
            html.Main(dash.page_container, className="page"),
        ],
    )


def on_callback_error(error: Exception) -> None:
    """Last line of defence: an unexpected exception becomes a short alert, never a traceback.

    Expected failures (the API refusing something) are caught in the callbacks themselves and
    shown next to the control that caused them.
    """
    log.exception("dashboard callback failed", exc_info=error)
    dash.set_props(
        "global-alert",
        {
            "children": alert(
                "Something went wrong in the dashboard; the details are in the server log. "
                "Reload the page to continue.",
                "danger",
            )
        },
    )
