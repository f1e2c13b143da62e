"""Pure ASGI guard in front of everything (API and dashboard).

With ``KANSCOPE_API_TOKEN`` set, every request needs the token (``Authorization: Bearer`` or
``X-API-Token``) or a valid signed session cookie from the dashboard's sign-in page
(:mod:`app.api.sessions`), except the paths in :data:`PUBLIC_PATHS`, matched exactly. It is
checked before any body byte is read. Refusals: ``/api/*`` and everything that is not a browser
page load (Dash's ``/_dash-*`` routes, assets, XHR) get 401 JSON; a browser's page load is sent
to the sign-in page (303). A request authenticated by the cookie alone that changes something
(not GET/HEAD/OPTIONS) must come from this site's own pages (``Sec-Fetch-Site``/``Origin``),
otherwise 403. An address that sent too many wrong tokens gets 429 for any token it presents
(:mod:`app.api.guesses`).

The body limit is enforced on the bytes actually received (Content-Length is only a shortcut for
refusing early; chunked bodies are counted). All errors are JSON."""

from __future__ import annotations

import hmac
import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.guesses import WrongTokenLimit, client_address, locked_out_message
from app.api.sessions import (
    COOKIE_NAME,
    SIGNIN_PATH,
    SIGNOUT_PATH,
    session_key,
    session_valid,
    signin_location,
)

#: reachable without a token; matched exactly (``/api/healthX`` and ``/api/health/`` are not)
PUBLIC_PATHS = frozenset(
    {
        "/api/health",
        "/api/docs",
        "/api/docs/oauth2-redirect",
        "/api/openapi.json",
        "/api/redoc",
        SIGNIN_PATH,
        SIGNOUT_PATH,
    }
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Dash's own routes: fetched by scripts, never shown as a page
_DASH_INTERNAL_PREFIXES = ("/_dash-", "/_reload-hash", "/_favicon", "/assets/")
API_TOKEN_MESSAGE = "Missing or wrong API token: send 'Authorization: Bearer <KANSCOPE_API_TOKEN>'."
DASHBOARD_TOKEN_MESSAGE = (
    f"Not signed in: sign in at {SIGNIN_PATH} or send 'Authorization: Bearer <KANSCOPE_API_TOKEN>'."
)
CROSS_SITE_MESSAGE = (
    "Refused: a request that changes something, authenticated by the session cookie alone, "
    "must come from kanscope's own pages."
)


#: on every HTTP response (a response that sets one itself keeps its own): no MIME sniffing, no
#: framing by other sites (the dashboard's buttons delete things: no clickjacking), and no
#: kanscope URL (run ids, dataset names in query strings) in the Referer sent to other sites
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"same-origin"),
)


def _with_security_headers(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_headers


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large_message(limit))


def too_large_message(limit: int) -> str:
    return (
        f"The request body is larger than the limit of {limit:,} bytes "
        f"({limit / 1024 / 1024:.1f} MiB). Upload a smaller file or raise "
        "KANSCOPE_MAX_UPLOAD_BYTES."
    )


async def _send_json(send: Send, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiGuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        api_token: str | None = None,
        session_ttl_s: float = 12 * 3600,
        wrong_tokens: WrongTokenLimit | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_token = api_token or None
        self.session_ttl_s = session_ttl_s
        self.wrong_tokens = wrong_tokens or WrongTokenLimit(0)
        self._session_key = session_key(api_token) if api_token else b""

    @staticmethod
    def _presented_token(headers: Headers) -> str:
        given = headers.get("authorization", "")
        return given[7:] if given.lower().startswith("bearer ") else headers.get("x-api-token", "")

    def _locked_out(self, scope: Scope, headers: Headers) -> int | None:
        """Seconds the request's address must wait before a token of its is compared again
        (see :mod:`app.api.guesses`); None when it presents none or may present one."""
        if not self._presented_token(headers):
            return None
        return self.wrong_tokens.retry_after(client_address(scope))

    def _token_matches(self, scope: Scope, headers: Headers) -> bool:
        """The request presents the right token; a wrong one counts against its address."""
        assert self.api_token is not None
        token = self._presented_token(headers)
        if not token:
            return False
        if hmac.compare_digest(token.encode(), self.api_token.encode()):
            return True
        self.wrong_tokens.wrong(client_address(scope))
        return False

    def _session_cookie_valid(self, headers: Headers) -> bool:
        cookie_header = headers.get("cookie")
        if not cookie_header:
            return False
        value = cookie_parser(cookie_header).get(COOKIE_NAME)
        if not value:
            return False
        return session_valid(value, self._session_key, self.session_ttl_s)

    @staticmethod
    def _from_own_pages(scope: Scope, headers: Headers) -> bool:
        """For cookie-authenticated writes: the browser says the request comes from this origin
        (``Sec-Fetch-Site``, sent by current browsers; else ``Origin``). SameSite=Strict keeps
        other sites' requests cookie-less, but not those of other ports of the same host."""
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None:
            return fetch_site in ("same-origin", "none")
        origin = headers.get("origin")
        if origin is None:
            return True  # not a browser, or one too old to say: SameSite is the defence
        host = headers.get("host", "")
        return origin == f"{scope.get('scheme', 'http')}://{host}"

    async def _refuse(self, scope: Scope, send: Send, headers: Headers) -> None:
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        if path == "/api" or path.startswith("/api/"):
            await _send_json(send, 401, API_TOKEN_MESSAGE, [(b"www-authenticate", b"Bearer")])
            return
        page_load = (
            method in ("GET", "HEAD")
            and "text/html" in headers.get("accept", "")
            and not path.startswith(_DASH_INTERNAL_PREFIXES)
        )
        if page_load:
            query = scope.get("query_string", b"").decode("latin-1")
            location = signin_location(path, query).encode("latin-1")
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", location),
                        (b"content-length", b"0"),
                        (b"cache-control", b"no-store"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await _send_json(send, 401, DASHBOARD_TOKEN_MESSAGE, [(b"www-authenticate", b"Bearer")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self.api_token:
            headers = Headers(scope=scope)
            if self._locked_out(scope, headers) is not None or not (
                self._token_matches(scope, headers) or self._session_cookie_valid(headers)
            ):
                await send({"type": "websocket.close", "code": 1008})
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        headers = Headers(scope=scope)
        path: str = scope.get("path", "")
        if self.api_token and path not in PUBLIC_PATHS:
            wait = self._locked_out(scope, headers)
            if wait is not None:
                retry = [(b"retry-after", str(wait).encode())]
                await _send_json(send, 429, locked_out_message(wait), retry)
                return
            if not self._token_matches(scope, headers):
                if not self._session_cookie_valid(headers):
                    await self._refuse(scope, send, headers)
                    return
                if scope.get("method", "GET") not in SAFE_METHODS and not self._from_own_pages(
                    scope, headers
                ):
                    await _send_json(send, 403, CROSS_SITE_MESSAGE)
                    return
        limit = self.max_body_bytes
        try:
            declared = int(headers.get("content-length", "-1"))
        except ValueError:
            declared = -1
        if declared > limit:
            await _send_json(send, 413, too_large_message(limit), [(b"connection", b"close")])
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await _send_json(send, 413, too_large_message(limit), [(b"connection", b"close")])
