"""Every error is JSON ``{"detail": "..."}``: service errors, kan_core errors, validation
errors, 404/405/413 from the framework, an unavailable database (503), running out of memory
(422 naming KANSCOPE_MAX_RUN_MEMORY_MB) and internal errors."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.services.errors import ServiceError
from app.services.memory import out_of_memory_message
from kan_core.errors import KanCoreError

log = logging.getLogger("kanscope.api")

DB_UNAVAILABLE = (
    "The database is unavailable right now ({reason}). Nothing was lost: runs and their "
    "results are kept in the database; retry in a moment."
)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


#: what a strict JSON body field takes, by pydantic error type (request bodies are strict)
STRICT_TYPE_HINTS = {
    "int_type": 'an integer, written as a JSON number without quotes (not "5", true or 5.0)',
    "float_type": 'a number, written as a JSON number without quotes (not "0.1" or true)',
    "string_type": "a JSON string",
    "bool_type": 'true or false (not "true" or 1)',
    "list_type": "a JSON list [...]",
    "dict_type": "a JSON object {...}",
}


def validation_message(errors: list[dict[str, Any]]) -> str:
    msgs = []
    for e in errors[:10]:
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        loc = e.get("loc") or ()
        hint = STRICT_TYPE_HINTS.get(str(e.get("type")))
        if hint and loc and loc[0] == "body":
            msg = f"must be {hint}"
        msgs.append(f"{_loc(e.get('loc', ()))}: {msg}")
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return "Invalid request: " + "; ".join(msgs) + more


def json_error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return json_error(exc.status_code, str(exc))

    @app.exception_handler(KanCoreError)
    async def _kan_core(_: Request, exc: KanCoreError) -> JSONResponse:
        return json_error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse(
            {"detail": validation_message(errors), "errors": errors}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 413 and detail == "Content Too Large":  # Starlette's own limit
            detail = "The request body is too large."
        return json_error(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        reason = type(getattr(exc, "orig", exc) or exc).__name__
        log.warning("database unavailable: %s", exc)
        return json_error(503, DB_UNAVAILABLE.format(reason=reason), {"Retry-After": "5"})

    @app.exception_handler(DBAPIError)
    async def _dbapi(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            return json_error(
                503, DB_UNAVAILABLE.format(reason="connection lost"), {"Retry-After": "5"}
            )
        log.exception("database error")
        return json_error(500, "Internal database error; see the server log.")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        oom = out_of_memory_message(exc, "This request")
        if oom is not None:  # an estimate that was wrong: say so, and which setting applies
            log.warning("request ran out of memory: %s", exc)
            return json_error(422, oom)
        log.exception("unhandled error", exc_info=exc)
        return json_error(500, f"Internal server error ({type(exc).__name__}); see the server log.")
