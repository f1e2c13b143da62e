"""The wrong-token limit: with ``KANSCOPE_API_TOKEN`` set, a client address that sent
``KANSCOPE_AUTH_FAILURES_PER_MINUTE`` wrong tokens within a minute (to the API's
``Authorization``/``X-API-Token`` header or the sign-in form) has any further token refused with
429 until its oldest wrong one is a minute old — the token is then not even compared, so a
right guess during the lock-out tells nothing. Requests that present no token (a browser with its
session cookie, a page load sent to the sign-in page) are not affected.

The window is the ``limits`` library's moving window in this process's memory: one API process
counts its own requests (``kanscope serve`` runs one). Behind a reverse proxy every client has
the proxy's address unless uvicorn is told to trust its ``X-Forwarded-For`` header, and one
client's wrong tokens lock out the others for up to a minute.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import Scope

_NAMESPACE = "kanscope-wrong-token"


def client_address(scope: Scope) -> str:
    """The peer's address as the ASGI server saw it ("unknown" when it did not say)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def locked_out_message(retry_after_s: int) -> str:
    return (
        f"Too many wrong tokens from this address: the token was not checked. Try again in "
        f"{retry_after_s} s with the server's KANSCOPE_API_TOKEN."
    )


class WrongTokenLimit:
    """Counts wrong tokens per client address; ``per_minute`` 0 counts nothing."""

    def __init__(self, per_minute: int) -> None:
        self.item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may present a token again; None: it may now."""
        if self.item is None or self._limiter.test(self.item, _NAMESPACE, address):
            return None
        reset_at = self._limiter.get_window_stats(self.item, _NAMESPACE, address).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def wrong(self, address: str) -> None:
        """``address`` presented a wrong token."""
        if self.item is not None:
            self._limiter.hit(self.item, _NAMESPACE, address)
