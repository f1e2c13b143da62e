"""The dashboard's only way to the backend: one pooled ``httpx.Client`` speaking to the HTTP API.

Callbacks call :func:`get_json`, :func:`post_json`, … and catch :class:`ApiError`, whose message is
always readable text (the API's ``detail``, or what went wrong with the connection) — never a
traceback. The client is created once by :func:`configure` (from ``create_dash_app``) and reused:
a new client per call costs tens of milliseconds of TLS/context set-up and doubles click latency.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_client: httpx.Client | None = None


class ApiError(Exception):
    """An API call failed; ``str(error)`` is a message fit to show a user."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def configure(api_base_url: str, token: str | None = None) -> None:
    """(Re)create the shared client for ``api_base_url`` (e.g. ``http://127.0.0.1:8050/api``)."""
    global _client
    token = token if token is not None else os.environ.get("KANSCOPE_API_TOKEN")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if _client is not None:
        _client.close()
    _client = httpx.Client(
        base_url=api_base_url.rstrip("/"),
        headers=headers,
        timeout=_TIMEOUT,
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
    )


def _get_client() -> httpx.Client:
    if _client is None:
        raise ApiError("The dashboard is not connected to an API (create_dash_app was not called).")
    return _client


def _detail_text(detail: Any) -> str:
    """FastAPI errors are ``{"detail": str}`` or, for validation, a list of ``{loc, msg}``."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path")]
                msg = str(item.get("msg", item))
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _request(method: str, path: str, **kwargs: Any) -> httpx.Response:
    client = _get_client()
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TimeoutException:
        raise ApiError(f"The API did not answer in time ({method} {path}). Try again.") from None
    except httpx.HTTPError as exc:
        raise ApiError(f"Cannot reach the API at {client.base_url}: {exc}") from None
    if response.status_code >= 400:
        try:
            body = response.json()
            detail = body.get("detail", body) if isinstance(body, dict) else body
            message = _detail_text(detail)
        except ValueError:
            message = response.text.strip()[:300] or response.reason_phrase
        if response.status_code >= 500:
            message = f"Server error ({response.status_code}): {message or 'see the server log'}"
        raise ApiError(message, response.status_code)
    return response


def get_json(path: str, params: dict[str, Any] | None = None) -> Any:
    return _request("GET", path, params=params).json()


def post_json(path: str, payload: Any = None, headers: dict[str, str] | None = None) -> Any:
    response = _request("POST", path, json=payload, headers=headers)
    return response.json() if response.content else None


def post_file(path: str, filename: str, content: bytes, data: dict[str, str] | None = None) -> Any:
    files = {"file": (filename, content, "text/csv")}
    return _request("POST", path, files=files, data=data).json()


def delete(path: str) -> Any:
    response = _request("DELETE", path)
    return response.json() if response.content else None


def get_bytes(path: str) -> tuple[bytes, str | None]:
    """Raw body and the file name from ``Content-Disposition`` (if any)."""
    response = _request("GET", path)
    disposition = response.headers.get("content-disposition", "")
    filename = None
    if "filename=" in disposition:
        filename = disposition.split("filename=", 1)[1].strip().strip('"')
    return response.content, filename
