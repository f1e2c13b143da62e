"""Dashboard sign-in: with ``KANSCOPE_API_TOKEN`` set, a browser signs in once at ``/signin`` and
gets a session cookie instead of sending the token with every request.

The cookie (``kanscope_session``) is ``<issued unix time>.<nonce>.<HMAC-SHA256>``, signed with a
key derived from the token (changing the token ends every session) and valid for
``KANSCOPE_SESSION_TTL_S``; it is HttpOnly, ``SameSite=Strict``, ``Path=/`` and ``Secure`` when the
sign-in came over https. :class:`app.api.middleware.ApiGuardMiddleware` checks it on every
request; this module issues and verifies it and serves the sign-in page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets
import time
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.guesses import WrongTokenLimit, client_address, locked_out_message

COOKIE_NAME = "kanscope_session"
SIGNIN_PATH = "/signin"
SIGNOUT_PATH = "/signout"
#: a session issued this far in the future (clock skew between processes) is still accepted
CLOCK_SKEW_S = 60
_KEY_PURPOSE = b"kanscope dashboard session cookie v1"
_SAFE_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%?=&,+-]{0,1000}")  # fullmatch
#: sign-in page headers: never cached, never framed (no clickjacking of the form)
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


def session_key(api_token: str) -> bytes:
    """The signing key: derived from the token, so a new token invalidates old cookies."""
    return hmac.new(api_token.encode(), _KEY_PURPOSE, hashlib.sha256).digest()


def _signature(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue_session(key: bytes, now: float | None = None) -> str:
    """A new cookie value issued at ``now`` (default: the current time)."""
    issued = int(time.time() if now is None else now)
    payload = f"{issued}.{secrets.token_urlsafe(12)}"
    return f"{payload}.{_signature(key, payload)}"


def session_valid(value: str, key: bytes, ttl_s: float, now: float | None = None) -> bool:
    """True if ``value`` was signed with ``key`` and is at most ``ttl_s`` seconds old."""
    issued_text, _, rest = value.partition(".")
    nonce, _, signature = rest.partition(".")
    if not (issued_text.isascii() and issued_text.isdigit() and nonce and signature):
        return False
    expected = _signature(key, f"{issued_text}.{nonce}")
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return False
    age = (time.time() if now is None else now) - int(issued_text)
    return -CLOCK_SKEW_S <= age <= ttl_s


def safe_next(target: str | None) -> str:
    """A local path to go to after signing in; anything else (another site, ``//host``,
    ``/\\host``, a scheme, odd characters) becomes ``/``."""
    if target and _SAFE_NEXT.fullmatch(target):
        return target
    return "/"


def signin_location(path: str, query_string: str = "") -> str:
    """``/signin?next=…`` for an unauthenticated browser that asked for ``path``."""
    target = path + (f"?{query_string}" if query_string else "")
    return f"{SIGNIN_PATH}?next={quote(safe_next(target), safe='')}"


def signin_page(next_path: str, error: str | None = None) -> str:
    message = f'<p id="signin-error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · kanscope</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; background: #f5f6f8; color: #1f2933; }}
main {{ max-width: 360px; margin: 12vh auto; background: #fff; padding: 24px 28px;
  border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.12); }}
h1 {{ font-size: 1.3rem; margin-top: 0; }}
label {{ display: block; margin-bottom: 6px; font-weight: 600; }}
input[type=password] {{ width: 100%; box-sizing: border-box; padding: 8px; font-size: 1rem; }}
button {{ margin-top: 14px; padding: 8px 18px; font-size: 1rem; }}
#signin-error {{ color: #b42318; background: #fef3f2; padding: 8px; border-radius: 4px; }}
.muted {{ color: #66788a; font-size: .85rem; }}
</style></head>
<body><main>
<h1>kanscope</h1>
{message}
<form id="signin-form" method="post" action="{SIGNIN_PATH}">
<label for="signin-token">Access token</label>
<input id="signin-token" name="token" type="password" autocomplete="current-password"
  autofocus required>
<input type="hidden" name="next" value="{html.escape(next_path)}">
<button id="signin-submit" type="submit">Sign in</button>
</form>
<p class="muted">The token is the server's KANSCOPE_API_TOKEN. Signing in keeps a session
cookie in this browser.</p>
</main></body></html>
"""


router = APIRouter(include_in_schema=False)


def _api_token(request: Request) -> str | None:
    return request.app.state.settings.api_token


@router.get(SIGNIN_PATH)
def signin_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the form field
    if not _api_token(request):  # nothing to sign in to
        return RedirectResponse("/", status_code=303)
    return HTMLResponse(signin_page(safe_next(next)), headers=_PAGE_HEADERS)


@router.post(SIGNIN_PATH)
async def signin(request: Request) -> Response:
    token = _api_token(request)
    if not token:
        return RedirectResponse("/", status_code=303)
    form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
    given, next_value = form.get("token"), form.get("next")
    next_path = safe_next(next_value if isinstance(next_value, str) else None)
    wrong_tokens: WrongTokenLimit = request.app.state.wrong_tokens
    address = client_address(request.scope)
    wait = wrong_tokens.retry_after(address)
    if wait is not None:  # the token is not compared
        page = signin_page(next_path, locked_out_message(wait))
        headers = _PAGE_HEADERS | {"Retry-After": str(wait)}
        return HTMLResponse(page, status_code=429, headers=headers)
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        wrong_tokens.wrong(address)
        page = signin_page(next_path, "Wrong token. Enter the server's KANSCOPE_API_TOKEN.")
        return HTMLResponse(page, status_code=401, headers=_PAGE_HEADERS)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        issue_session(session_key(token)),
        max_age=int(request.app.state.settings.session_ttl_s),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post(SIGNOUT_PATH)
def signout(request: Request) -> Response:
    response = RedirectResponse(SIGNIN_PATH, status_code=303)
    response.delete_cookie(
        COOKIE_NAME,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
