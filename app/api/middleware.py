"""Pure ASGI guard in front of everything: the API token is checked before any body byte is
read, and the body limit is enforced on the bytes actually received (Content-Length is only a
shortcut for refusing early; chunked bodies are counted). Both answer JSON errors."""

from __future__ import annotations

import hmac
import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLIC_API_PATHS = ("/api/health", "/api/docs", "/api/openapi.json", "/api/redoc")


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
    def __init__(self, app: ASGIApp, max_body_bytes: int, api_token: str | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_token = api_token

    def _authorised(self, headers: Headers) -> bool:
        assert self.api_token is not None
        given = headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else headers.get("x-api-token", "")
        return hmac.compare_digest(token.encode(), self.api_token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope.get("path", "")
        if (
            self.api_token
            and path.startswith("/api")
            and not path.startswith(PUBLIC_API_PATHS)
            and not self._authorised(headers)
        ):
            await _send_json(
                send,
                401,
                "Missing or wrong API token: send 'Authorization: Bearer <KANSCOPE_API_TOKEN>'.",
                [(b"www-authenticate", b"Bearer")],
            )
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
