"""Timestamps from the database clock (never the worker's), as naive UTC.

``utcnow()`` and ``utcnow_minus(seconds)`` are SQL expressions compiled per dialect, so a
heartbeat written by a worker on another host and the reaper's cutoff use the same clock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class utcnow(FunctionElement[Any]):  # noqa: N801 - reads like the SQL it emits
    """Current UTC time of the database server."""

    type = DateTime()
    inherit_cache = True


class utcnow_minus(FunctionElement[Any]):  # noqa: N801
    """Current UTC time of the database server minus a number of seconds."""

    type = DateTime()
    inherit_cache = True

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        super().__init__()


@compiles(utcnow, "sqlite")
def _sqlite_now(element: utcnow, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


@compiles(utcnow, "postgresql")
def _pg_now(element: utcnow, compiler: Any, **kw: Any) -> str:
    return "(now() AT TIME ZONE 'utc')"


@compiles(utcnow)
def _default_now(element: utcnow, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow_minus, "sqlite")
def _sqlite_minus(element: utcnow_minus, compiler: Any, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{element.seconds:.3f} seconds')"


@compiles(utcnow_minus, "postgresql")
def _pg_minus(element: utcnow_minus, compiler: Any, **kw: Any) -> str:
    return f"((now() AT TIME ZONE 'utc') - make_interval(secs => {element.seconds:.3f}))"
