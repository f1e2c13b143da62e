"""Dependencies: settings, database session (writing transactions for non-GET requests),
executor. ``Annotated`` shortcuts keep the routes short."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.session import Database
from app.worker.executor import Executor


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_session(request: Request) -> Iterator[Session]:
    """GET/HEAD read in a plain transaction; other methods write (SQLite: BEGIN IMMEDIATE)."""
    db: Database = request.app.state.db
    write = request.method not in ("GET", "HEAD", "OPTIONS")
    with db.session(write=write) as session:
        yield session


def get_executor(request: Request) -> Executor:
    return request.app.state.executor


#: database ids fit a signed 64-bit integer; anything larger is a 422, not an overflow
MAX_ID = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
#: layer / node indices of an edge
IndexPath = Annotated[int, Path(ge=0, le=1_000_000)]

SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_db)]
SessionDep = Annotated[Session, Depends(get_session)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]

# POST endpoints that start a run: the same key gives back the same run (200), started once
IdempotencyKey = Annotated[
    str | None, Header(max_length=200, description="Same key → same run; it is started once.")
]
