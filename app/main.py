"""The ASGI app: FastAPI routers under /api (JSON errors everywhere), the sign-in page, then the
Dash dashboard mounted at "/" through a2wsgi, all behind ``ApiGuardMiddleware`` (token or
session cookie, body limit). ``create_app(settings)`` builds it; nothing runs at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from app import __version__
from app.api import sessions
from app.api.errors import install_error_handlers
from app.api.guesses import WrongTokenLimit
from app.api.middleware import ApiGuardMiddleware
from app.api.routes import api_router
from app.config import Settings, get_settings
from app.db.session import Database

log = logging.getLogger("kanscope")

#: multipart framing on top of the file itself
MULTIPART_OVERHEAD = 64 * 1024


def _start_background(app: FastAPI, settings: Settings, db: Database) -> None:
    from app.worker.executor import make_executor
    from app.worker.reaper import Reaper

    executor = make_executor(settings, db)
    app.state.executor = executor
    if getattr(executor, "name", "") == "local":
        repaired = executor.repair_dead_local_runs()  # type: ignore[attr-defined]
        if repaired:
            log.warning("marked runs %s failed: their training process is gone", repaired)
    # queued runs whose message may be gone (Redis was down, or the server stopped) are sent
    # again; a duplicate delivery is skipped by the workers' claim
    executor.resubmit_queued()  # type: ignore[attr-defined]
    reaper = Reaper(
        db,
        settings.lease_s,
        settings.reaper_interval_s,
        settings.requeue_stale_runs,
        on_requeue=executor.submit,
    )
    reaper.run_once()
    reaper.start()
    app.state.reaper = reaper


def create_app(
    settings: Settings | None = None, *, start_executor: bool = True, mount_dashboard: bool = True
) -> FastAPI:
    """Build the app. ``start_executor=False`` leaves ``app.state.executor`` to the caller."""
    settings = settings or get_settings()
    db = Database(settings.effective_database_url, settings.sqlite_busy_timeout_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            from app.services.startup import migrate

            migrate(settings.effective_database_url)
        if settings.load_demo:
            from app.services.startup import load_demo_dataset

            load_demo_dataset(db, settings.max_dataset_rows, settings.max_dataset_columns)
        if start_executor:
            _start_background(app, settings, db)
        try:
            yield
        finally:
            reaper = getattr(app.state, "reaper", None)
            if reaper is not None:
                reaper.stop()
            executor = getattr(app.state, "executor", None)
            if start_executor and executor is not None:
                executor.shutdown()
            db.dispose()

    app = FastAPI(
        title="kanscope API",
        version=__version__,
        description="Interpretable Kolmogorov–Arnold Networks for tabular data. Every error "
        'is JSON {"detail": "..."} with a 4xx status (503 when the database or queue is down).',
        docs_url="/api/docs",
        redoc_url="/api/redoc",
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.executor = None
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(sessions.router)  # /signin, /signout (before the dashboard's catch-all)

    @app.api_route(
        "/api/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    def api_not_found(path: str, request: Request) -> JSONResponse:
        return JSONResponse(
            {"detail": f"No API endpoint {request.method} /api/{path}. See /api/docs."},
            status_code=404,
        )

    # one count of wrong tokens per address for the API's header and the sign-in form
    app.state.wrong_tokens = WrongTokenLimit(settings.auth_failures_per_minute)
    app.add_middleware(
        ApiGuardMiddleware,
        max_body_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        api_token=settings.api_token,
        session_ttl_s=settings.session_ttl_s,
        wrong_tokens=app.state.wrong_tokens,
    )
    if mount_dashboard:
        _mount_dashboard(app, settings)
    return app


def _mount_dashboard(app: FastAPI, settings: Settings) -> None:
    try:
        from app.dashboard import create_dash_app
    except ImportError as exc:
        log.warning("dashboard not mounted (%s); the API works without it", exc)
        return
    from a2wsgi import WSGIMiddleware

    dash_app: Any = create_dash_app(settings.api_base_url, settings.api_token)
    # a2wsgi's ASGI types are its own, not Starlette's (same protocol)
    app.mount("/", cast(ASGIApp, WSGIMiddleware(dash_app.server)))
