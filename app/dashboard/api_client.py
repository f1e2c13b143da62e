"""The dashboard's only way to the backend: one pooled ``httpx.Client`` speaking to the HTTP API.

Callbacks call one typed function per endpoint (:func:`get_run`, :func:`delete_dataset`, …) and
catch :class:`ApiError`, whose message is always readable text (the API's ``detail``, or what went
wrong with the connection) — never a traceback. Paths are built here from typed, checked values
only (ids are positive ints, edge indices non-negative ints, kinds members of their enum) and the
result must be plain ``/word/123/…`` segments: a value from the browser such as
``"7/../../datasets/2/preview?x="`` or ``"3?cascade=true"`` raises :class:`InvalidRequestError`
(an ``ApiError``) and never reaches the API. Query parameters go through httpx's encoding.

The client is created once by :func:`configure` (from ``create_dash_app``) and reused: a new
client per call costs tens of milliseconds of TLS/context set-up and doubles click latency.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from typing import Any, Literal, get_args

import httpx

from app.api.sessions import COOKIE_NAME, issue_session, session_key
from app.dashboard.validation import MAX_ID, index_int, leaderboard_id, one_of

_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_client: httpx.Client | None = None


ExportKind = Literal["latex", "python", "sympy", "model", "predictions"]
PredictionSplit = Literal["validation", "train"]
EXPORT_KINDS: tuple[str, ...] = get_args(ExportKind)
PREDICTION_SPLITS: tuple[str, ...] = get_args(PredictionSplit)
_PATH = re.compile(r"(/[a-z0-9][a-z0-9-]*)+")  # fullmatch


class ApiError(Exception):
    """An API call failed; ``str(error)`` is a message fit to show a user."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class InvalidRequestError(ApiError):
    """A value meant for an API path or query was not of its type; nothing was sent."""

    def __init__(self, what: str, value: Any) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "…"
        super().__init__(f"{what} (got {shown}); nothing was sent.", 422)


class SignedSession(httpx.Auth):
    """Signs each request in with a session cookie issued just now under the key derived from
    the token, as the sign-in page issues them. The dashboard's calls present no token, so the
    limit on wrong tokens (:mod:`app.api.guesses`), which locks out the token of an address
    that guessed too often — often this very host — never locks out the dashboard itself."""

    def __init__(self, token: str) -> None:
        self._key = session_key(token)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Cookie"] = f"{COOKIE_NAME}={issue_session(self._key)}"
        yield request


def configure(api_base_url: str, token: str | None = None) -> None:
    """(Re)create the shared client for ``api_base_url`` (e.g. ``http://127.0.0.1:8050/api``)."""
    global _client
    token = token if token is not None else os.environ.get("KANSCOPE_API_TOKEN")
    if _client is not None:
        _client.close()
    _client = httpx.Client(
        base_url=api_base_url.rstrip("/"),
        headers={"Accept": "application/json"},
        auth=SignedSession(token) if token else None,
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


def _id(value: Any, what: str) -> int:
    """``value`` if it is an int id (1 ≤ id ≤ 2**63 − 1; not a bool, not a numeric string)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise InvalidRequestError(f"The {what} id must be a positive integer", value)
    return value


def _index(value: Any, what: str) -> int:
    if not isinstance(value, int) or index_int(value) is None:
        raise InvalidRequestError(f"The {what} must be a non-negative integer", value)
    return value


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    checked = one_of(value, allowed)
    if checked is None:
        raise InvalidRequestError(f"The {what} must be one of {', '.join(allowed)}", value)
    return checked


def _path(*segments: str | int) -> str:
    """``/a/1/b`` from segments already checked by the functions above; the result is refused
    unless it is plain lowercase words, digits and hyphens between slashes."""
    path = "/" + "/".join(str(s) for s in segments)
    if not _PATH.fullmatch(path):
        raise InvalidRequestError("An API path may hold only words and numbers", path)
    return path


def _get_json(path: str, params: dict[str, Any] | None = None) -> Any:
    return _request("GET", path, params=params).json()


def _post_json(path: str, payload: Any = None, headers: dict[str, str] | None = None) -> Any:
    response = _request("POST", path, json=payload, headers=headers)
    return response.json() if response.content else None


def _delete(path: str) -> Any:
    response = _request("DELETE", path)
    return response.json() if response.content else None


# ── datasets ──────────────────────────────────────────────────────────────────────────────


def list_datasets() -> list[dict[str, Any]]:
    datasets = _get_json("/datasets")
    if isinstance(datasets, dict):  # tolerate {"datasets": [...]}
        datasets = datasets.get("datasets", [])
    return datasets


def get_dataset(dataset_id: int) -> dict[str, Any]:
    return _get_json(_path("datasets", _id(dataset_id, "dataset")))


def dataset_preview(dataset_id: int, limit: int = 20) -> dict[str, Any]:
    path = _path("datasets", _id(dataset_id, "dataset"), "preview")
    return _get_json(path, params={"limit": _id(limit, "row limit")})


def row_check(
    dataset_id: int, target: str, features: list[str], task: str = "regression"
) -> dict[str, Any]:
    """``POST /datasets/{id}/row-check``: rows left after dropping missing values, per column."""
    body = {"target_columns": [target], "feature_columns": list(features), "task": task}
    return _post_json(_path("datasets", _id(dataset_id, "dataset"), "row-check"), body)


def upload_dataset(filename: str, content: bytes) -> dict[str, Any]:
    """``POST /datasets`` (multipart); the file name travels in the form data, not the path."""
    files = {"file": (filename, content, "text/csv")}
    return _request("POST", "/datasets", files=files).json()


def delete_dataset(dataset_id: int, *, cascade: bool = False) -> None:
    """Refused by the API (409) while runs use the dataset; ``cascade`` (after the user
    confirmed it) deletes its finished runs with it."""
    path = _path("datasets", _id(dataset_id, "dataset"))
    if cascade:
        _request("DELETE", path, params={"cascade": "true"})
    else:
        _delete(path)


def dataset_composition(dataset_id: int) -> dict[str, Any]:
    return _get_json(_path("datasets", _id(dataset_id, "dataset"), "composition"))


def featurise_dataset(dataset_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return _post_json(_path("datasets", _id(dataset_id, "dataset"), "featurise"), body)


def list_leaderboards(dataset_id: int) -> list[dict[str, Any]]:
    return _get_json(_path("datasets", _id(dataset_id, "dataset"), "leaderboards"))


def create_leaderboard(dataset_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return _post_json(_path("datasets", _id(dataset_id, "dataset"), "leaderboards"), body)


def get_leaderboard(dataset_id: int, board_id: str, *, predictions: bool = True) -> dict[str, Any]:
    board = leaderboard_id(board_id)
    if board is None:
        raise InvalidRequestError("A leaderboard id is 1-32 lowercase hex digits", board_id)
    path = _path("datasets", _id(dataset_id, "dataset"), "leaderboards", board)
    return _get_json(path, params={"predictions": "true" if predictions is True else "false"})


# ── runs ──────────────────────────────────────────────────────────────────────────────────


def list_runs(dataset_id: int | None = None) -> list[dict[str, Any]]:
    """``GET /runs``; with ``dataset_id`` only that dataset's runs."""
    if dataset_id is None:
        runs = _get_json("/runs")
    else:
        runs = _request(
            "GET", "/runs", params={"dataset_id": _id(dataset_id, "dataset"), "limit": 5000}
        ).json()
    return runs.get("runs", []) if isinstance(runs, dict) else runs


def create_run(body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    return _post_json("/runs", body, headers={"Idempotency-Key": idempotency_key})


def get_run(run_id: int) -> dict[str, Any]:
    return _get_json(_path("runs", _id(run_id, "run")))


#: points per ``run_metrics`` answer (the API's default limit, sent explicitly): an answer this
#: long may have more points after it
METRICS_PAGE = 5000


def run_metrics(run_id: int, after_step: int | None = None, wait_s: float = 0.0) -> dict[str, Any]:
    """``GET /runs/{id}/metrics``, at most ``METRICS_PAGE`` points; ``wait_s`` > 0: the API
    waits up to that long for a point after ``after_step`` (a long poll) before answering."""
    params: dict[str, Any] = {"limit": METRICS_PAGE}
    if after_step is not None:
        if isinstance(after_step, bool) or not isinstance(after_step, int) or after_step < -1:
            raise InvalidRequestError("after_step must be an integer ≥ -1", after_step)
        params["after_step"] = after_step
    path = _path("runs", _id(run_id, "run"), "metrics")
    if wait_s <= 0:
        return _get_json(path, params=params)
    params["wait_s"] = min(float(wait_s), 10.0)
    timeout = httpx.Timeout(30.0 + params["wait_s"], connect=5.0)
    return _request("GET", path, params=params, timeout=timeout).json()


def cancel_run(run_id: int) -> dict[str, Any]:
    return _post_json(_path("runs", _id(run_id, "run"), "cancel"))


def delete_run(run_id: int) -> None:
    _delete(_path("runs", _id(run_id, "run")))


def run_network(run_id: int) -> dict[str, Any]:
    return _get_json(_path("runs", _id(run_id, "run"), "network"))


def _edge_path(run_id: int, edge: tuple[int, int, int], *rest: str) -> str:
    if not isinstance(edge, tuple | list) or len(edge) != 3:
        raise InvalidRequestError("An edge is (layer, i, j)", edge)
    layer, i, j = (_index(v, "edge index") for v in edge)
    return _path("runs", _id(run_id, "run"), "edges", layer, i, j, *rest)


def run_edge(run_id: int, edge: tuple[int, int, int]) -> dict[str, Any]:
    return _get_json(_edge_path(run_id, edge))


def edge_suggestions(run_id: int, edge: tuple[int, int, int]) -> Any:
    return _get_json(_edge_path(run_id, edge, "suggestions"))


def fix_edge(run_id: int, edge: tuple[int, int, int], function_name: str) -> Any:
    """The function name travels in the JSON body; the API checks it against its library."""
    if not isinstance(function_name, str):
        raise InvalidRequestError("A symbolic function name is text", function_name)
    return _post_json(_edge_path(run_id, edge, "fix"), {"name": function_name})


def unfix_edge(run_id: int, edge: tuple[int, int, int]) -> Any:
    return _delete(_edge_path(run_id, edge, "fix"))


def auto_symbolic(run_id: int, r2_threshold: float) -> dict[str, Any]:
    """Waits for the server's auto-symbolic time budget plus a margin
    (:func:`slow_call_timeout`): auto-symbolic fits the edges inside the request."""
    body = {"r2_threshold": float(r2_threshold)}
    path = _path("runs", _id(run_id, "run"), "auto-symbolic")
    timeout = slow_call_timeout("auto_symbolic_timeout_s")
    return _request("POST", path, json=body, timeout=timeout).json()


def prune(run_id: int, threshold: float) -> dict[str, Any]:
    return _post_json(_path("runs", _id(run_id, "run"), "prune"), {"threshold": float(threshold)})


def reset_edits(run_id: int) -> None:
    _post_json(_path("runs", _id(run_id, "run"), "reset-edits"))


def retrain(run_id: int, steps: int | None = None) -> dict[str, Any]:
    body = {} if steps is None else {"steps": _id(steps, "step count")}
    return _post_json(_path("runs", _id(run_id, "run"), "retrain"), body)


def run_predictions(run_id: int, split: PredictionSplit = "validation") -> dict[str, Any]:
    path = _path("runs", _id(run_id, "run"), "predictions")
    return _get_json(path, params={"split": _choice(split, PREDICTION_SPLITS, "split")})


def ensemble_stability(run_id: int) -> dict[str, Any]:
    """An ensemble run's formula stability (fits every member's edges: waits like
    auto-symbolic, :func:`slow_call_timeout`)."""
    path = _path("runs", _id(run_id, "run"), "ensemble", "stability")
    return _request("GET", path, timeout=slow_call_timeout("auto_symbolic_timeout_s")).json()


def run_formula(run_id: int) -> dict[str, Any]:
    """Waits for the server's formula time limit plus a margin (:func:`slow_call_timeout`), so
    the server's own 422 "took longer than …" arrives instead of a dashboard time-out."""
    path = _path("runs", _id(run_id, "run"), "formula")
    return _request("GET", path, timeout=slow_call_timeout()).json()


def export_run(run_id: int, kind: ExportKind) -> tuple[bytes, str | None]:
    """Raw body and the file name from ``Content-Disposition`` (if any)."""
    path = _path("runs", _id(run_id, "run"), "export", _choice(kind, EXPORT_KINDS, "export kind"))
    return _file(_request("GET", path))


def predict_rows(run_id: int, filename: str, content: bytes) -> tuple[bytes, str | None]:
    """``POST /runs/{id}/predict`` (multipart): the CSV with the run's predictions appended."""
    files = {"file": (filename, content, "text/csv")}
    return _file(_request("POST", _path("runs", _id(run_id, "run"), "predict"), files=files))


def _file(response: httpx.Response) -> tuple[bytes, str | None]:
    """A download's body and the file name from ``Content-Disposition`` (if any)."""
    disposition = response.headers.get("content-disposition", "")
    filename = None
    if "filename=" in disposition:
        filename = disposition.split("filename=", 1)[1].strip().strip('"')
    return response.content, filename


# ── server limits and formula discovery ───────────────────────────────────────────────────

#: the server's default KANSCOPE_FORMULA_TIMEOUT_S, used while ``GET /limits`` cannot be read
DEFAULT_FORMULA_TIMEOUT_S = 60.0
#: what a slow call waits beyond the server's limit: loading the model and scoring the formula
#: around the time-limited simplification
SLOW_CALL_MARGIN_S = 30.0
#: ``GET /limits`` per API base URL: the server's settings, fixed while it runs (not UI state)
_limits_by_api: dict[str, dict[str, Any]] = {}


def server_limits() -> dict[str, Any]:
    """``GET /limits`` (formula time limit, discovery budget bounds), read once per API."""
    key = str(_get_client().base_url)
    if key not in _limits_by_api:
        limits = _get_json("/limits")
        if not isinstance(limits, dict):
            raise ApiError("GET /limits did not answer with an object.")
        _limits_by_api[key] = limits
    return _limits_by_api[key]


def slow_call_timeout(limit_name: str = "formula_timeout_s") -> httpx.Timeout:
    """Read time-out of the formula and auto-symbolic calls: the server's time limit
    ``limit_name`` (``KANSCOPE_FORMULA_TIMEOUT_S`` or ``KANSCOPE_AUTO_SYMBOLIC_TIMEOUT_S``,
    from ``GET /limits``) plus :data:`SLOW_CALL_MARGIN_S`."""
    try:
        limit = float(server_limits()[limit_name])
    except (ApiError, KeyError, TypeError, ValueError):
        limit = DEFAULT_FORMULA_TIMEOUT_S
    if not 0 < limit < float("inf"):  # NaN fails this too
        limit = DEFAULT_FORMULA_TIMEOUT_S
    return httpx.Timeout(limit + SLOW_CALL_MARGIN_S, connect=5.0)


def _budget(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidRequestError("A time budget is a number of seconds", value)
    return float(value)


def discover_formula(
    run_id: int, budget_s: float, idempotency_key: str | None = None
) -> dict[str, Any]:
    """``POST /runs/{id}/discover``: a discovery child run on that run's data and split."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    path = _path("runs", _id(run_id, "run"), "discover")
    return _post_json(path, {"budget_s": _budget(budget_s)}, headers=headers)


def run_discovery(run_id: int) -> dict[str, Any]:
    """``GET /runs/{id}/discovery``: status, progress, then the formulas of a discovery run."""
    return _get_json(_path("runs", _id(run_id, "run"), "discovery"))


def latest_discovery_of(run_id: int) -> dict[str, Any] | None:
    """The newest discovery run started for run ``run_id`` (``parent_run_id``), or None."""
    params = {"parent_run_id": _id(run_id, "run"), "model": "discover", "limit": 1}
    runs = _get_json("/runs", params=params)
    runs = runs.get("runs", []) if isinstance(runs, dict) else runs
    return runs[0] if runs else None


# ── inverse design ──────────────────────────────────────────────────────────────────────────


def start_design(run_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /runs/{id}/design``: a design run (kind ``design``) for trained run ``run_id``."""
    if not isinstance(body, dict):
        raise InvalidRequestError("A design request is an object", body)
    return _request("POST", _path("runs", _id(run_id, "run"), "design"), json=body).json()


def get_design(run_id: int) -> dict[str, Any]:
    """``GET /runs/{id}/design``: progress while it runs, then the ranked candidates."""
    return _get_json(_path("runs", _id(run_id, "run"), "design"))


def design_csv_href(run_id: int) -> str:
    """Where the browser downloads a design's candidates (``/api/runs/{id}/design/…csv``)."""
    return f"/api/runs/{_id(run_id, 'run')}/design/candidates.csv"
