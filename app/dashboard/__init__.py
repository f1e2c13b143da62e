"""Plotly Dash dashboard. It talks to the HTTP API only (see :mod:`app.dashboard.api_client`).

``create_dash_app(api_base_url)`` builds the Dash app; ``kanscope serve`` mounts its Flask server at
``/`` behind FastAPI (which serves ``/api``)::

    api.mount("/", a2wsgi.WSGIMiddleware(create_dash_app("http://127.0.0.1:8050/api").server))
"""

from __future__ import annotations

import importlib
import os

import dash

from app.dashboard import api_client
from app.dashboard.layout import app_shell, on_callback_error
from app.resources import assets_dir

PAGE_MODULES = (
    "app.dashboard.pages.datasets",
    "app.dashboard.pages.train",
    "app.dashboard.pages.runs",
    "app.dashboard.pages.run",
    "app.dashboard.pages.compare",
    "app.dashboard.pages.leaderboard",
    "app.dashboard.pages.design",
)


def create_dash_app(api_base_url: str, api_token: str | None = None) -> dash.Dash:
    """Build the dashboard; every callback calls the API at ``api_base_url`` (ends in ``/api``).

    ``api_token`` (default: ``KANSCOPE_API_TOKEN`` from the environment) is sent as a bearer token
    by the server's own calls. Browsers never see it: with a token set, the app's guard lets only
    signed-in browsers (session cookie from ``/signin``) reach any dashboard route, and the shell
    shows a sign-out button.
    """
    token = api_token if api_token is not None else os.environ.get("KANSCOPE_API_TOKEN")
    api_client.configure(api_base_url, token)
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder="",  # pages are imported below as ordinary modules (safe to call twice)
        assets_folder=str(assets_dir()),
        title="kanscope",
        suppress_callback_exceptions=True,
        update_title="",  # "" (as None): the tab title does not change while updating
        on_error=on_callback_error,
    )
    for name in PAGE_MODULES:
        module = importlib.import_module(name)
        # What Dash's own page loader does after importing a page from ``pages_folder``.
        dash.page_registry[name]["layout"] = module.layout
    app.layout = app_shell(with_sign_out=bool(token))
    return app
