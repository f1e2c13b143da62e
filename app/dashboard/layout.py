"""The shell around every page: navigation bar, page container and app-wide stores."""

from __future__ import annotations

import dash
from dash import dcc, html

NAV_LINKS = (
    ("Datasets", "/"),
    ("Train", "/train"),
    ("Runs", "/runs"),
    ("Compare", "/compare"),
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
            # The dataset/target/features chosen on Datasets, read by Train (session storage, so a
            # reload keeps it and two tabs do not fight).
            dcc.Store(id="selection-store", storage_type="session"),
            html.Main(dash.page_container, className="page"),
        ],
    )
