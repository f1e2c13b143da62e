"""The shell around every page: navigation bar, page container and app-wide stores."""

from __future__ import annotations

import logging

import dash
from dash import dcc, html

from app.dashboard.components import alert
from app.dashboard.toasts import toast_area

log = logging.getLogger(__name__)

NAV_LINKS = (
    ("Datasets", "/"),
    ("Train", "/train"),
    ("Runs", "/runs"),
    ("Compare", "/compare"),
    ("Leaderboard", "/leaderboard"),
    ("Design", "/design"),
)


def sign_out_form() -> html.Form:
    """A plain form post to ``/signout`` (served by the API app), which drops the session cookie
    and shows the sign-in page; only where a token protects the dashboard."""
    return html.Form(
        html.Button("Sign out", id="sign-out", type="submit", className="secondary small"),
        action="/signout",
        method="POST",
        className="sign-out",
        style={"marginLeft": "auto"},
    )


def app_shell(with_sign_out: bool = False) -> html.Div:
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
                    sign_out_form() if with_sign_out else None,
                ],
            ),
            # Dataset / target / features / task chosen on Datasets and read by Train. Session
            # storage: a reload keeps it, two tabs do not fight.
            dcc.Store(id="selection-store", storage_type="session"),
            # Callbacks navigate by setting href here (no full page reload).
            dcc.Location(id="nav-location", refresh="callback-nav"),
            html.Div(id="global-alert"),
            *toast_area(),  # fix / unfix / prune / retrain notifications that stay
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
