"""The dashboard behind KANSCOPE_API_TOKEN (issue #20, item 1), on SQLite and PostgreSQL.

A real ``kanscope serve`` with the dashboard and a token: without signing in, every Dash route
(page, layout, dependencies, callbacks, assets) is refused, and the attacks of the issue — list
datasets through ``/_dash-update-component``, upload, delete, download a model — change and
reveal nothing. After signing in at ``/signin`` (a signed, expiring, HttpOnly, SameSite=Strict
cookie) the same callbacks work, and client values meant to reach other API paths
(``run-id = "7/../../datasets/2/preview?x="``, ``ds-select.value = "N?cascade=true"``) are
refused. In-process checks cover the guard's details (exact public paths, expiry, token change,
tampering, Secure over https, open redirects, cross-site writes).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.sessions import COOKIE_NAME, issue_session, safe_next, session_key
from app.dashboard import api_client
from app.dashboard.validation import positive_int, positive_ints, valid_edge
from app.main import create_app
from tests.app.api_helpers import LiveServer, wait_for

TOKEN = "correct-horse-battery-staple-42"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SESSION_TTL_S = 600
SMALL_CSV = (
    "alpha,beta,gamma\n" + "".join(f"{i},{i % 7},{0.5 * i + i % 7}\n" for i in range(40))
).encode()
SECRET_CSV = b"secret_column_x,secret_column_y\n1,2\n3,4\n5,6\n"


# ── a real server with the dashboard and a token, one per database ───────────────────────


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp(f"dashboard-auth-{request.param}")
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_schema_url")
    else:
        url = f"sqlite:///{data_dir / 'kanscope.sqlite3'}"
    live = LiveServer(
        data_dir,
        {
            "KANSCOPE_DATABASE_URL": url,
            "KANSCOPE_API_TOKEN": TOKEN,
            "KANSCOPE_SESSION_TTL_S": str(SESSION_TTL_S),
            "KANSCOPE_EXECUTOR": "local",
        },
        dashboard=True,
    )
    try:
        live.wait_healthy()
        yield live
    finally:
        live.stop()
        from app.db.session import forget_databases

        forget_databases()


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    """The server as a script with the token uses it (to set up and to check the outcome)."""
    with httpx.Client(base_url=server.url, headers=BEARER, timeout=60) as c:
        yield c


@pytest.fixture
def anonymous(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, follow_redirects=False) as c:
        yield c


@pytest.fixture
def browser_session(server: LiveServer) -> Iterator[httpx.Client]:
    """A client signed in through the sign-in form: it holds only the session cookie."""
    with httpx.Client(base_url=server.url, timeout=60, follow_redirects=False) as c:
        r = c.post("/signin", data={"token": TOKEN, "next": "/"})
        assert r.status_code == 303, r.text
        assert COOKIE_NAME in c.cookies
        yield c


@pytest.fixture(scope="module")
def trained_run(server: LiveServer) -> dict[str, Any]:
    """A small KAN trained once per server: it has a model file to download."""
    with httpx.Client(base_url=server.url, headers=BEARER, timeout=60) as api:
        dataset = api_upload(api, SMALL_CSV, "trained.csv")
        body = {
            "dataset_id": dataset["id"],
            "target_columns": ["gamma"],
            "feature_columns": ["alpha", "beta"],
            "model": "kan",
            "hidden": [2],
            "steps": 10,
            "val_fraction": 0.25,
        }
        r = api.post("/api/runs", json=body)
        assert r.status_code == 201, r.text
        run = wait_for(api, r.json()["id"])
    assert run["status"] == "succeeded" and run["has_model"], run
    return run


@pytest.fixture(scope="module")
def dependencies(server: LiveServer) -> list[dict[str, Any]]:
    """Dash's callback table, read with the bearer token (the guard accepts it on Dash routes)."""
    r = httpx.get(f"{server.url}/_dash-dependencies", headers=BEARER, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _callback(deps: list[dict[str, Any]], trigger: str) -> dict[str, Any]:
    """The server callback fired by ``trigger`` ("id.prop") that is not client-side."""
    for dep in deps:
        inputs = {f"{i['id']}.{i['property']}" for i in dep["inputs"]}
        if trigger in inputs and not dep.get("clientside_function"):
            return dep
    raise AssertionError(f"no callback is triggered by {trigger}")


def _outputs(spec: str) -> list[dict[str, str]] | dict[str, str]:
    """What the renderer sends as ``outputs`` (``@hash`` of duplicate outputs stripped)."""

    def one(item: str) -> dict[str, str]:
        component, prop = item.rsplit(".", 1)
        return {"id": component, "property": prop.split("@", 1)[0]}

    if spec.startswith(".."):
        return [one(item) for item in spec[2:-2].split("...")]
    return one(spec)


def callback_body(
    deps: list[dict[str, Any]], trigger: str, values: dict[str, Any]
) -> dict[str, Any]:
    """The JSON Dash's renderer posts to ``/_dash-update-component`` when ``trigger`` changes;
    ``values`` maps "id.prop" to the value the client claims (others are None)."""
    dep = _callback(deps, trigger)

    def fill(items: list[dict[str, str]]) -> list[dict[str, Any]]:
        return [{**item, "value": values.get(f"{item['id']}.{item['property']}")} for item in items]

    return {
        "output": dep["output"],
        "outputs": _outputs(dep["output"]),
        "inputs": fill(dep["inputs"]),
        "state": fill(dep.get("state") or []),
        "changedPropIds": [trigger],
    }


def call(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post("/_dash-update-component", json=body)


def upload_body(deps: list[dict[str, Any]], content: bytes, filename: str) -> dict[str, Any]:
    data_uri = "data:text/csv;base64," + base64.b64encode(content).decode()
    return callback_body(
        deps,
        "ds-upload.contents",
        {"ds-upload.contents": data_uri, "ds-upload.filename": filename, "ds-version.data": 0},
    )


def dataset_ids(api: httpx.Client) -> set[int]:
    return {d["id"] for d in api.get("/api/datasets").json()}


def api_upload(api: httpx.Client, content: bytes, name: str) -> dict[str, Any]:
    r = api.post("/api/datasets", files={"file": (name, content, "text/csv")})
    assert r.status_code == 201, r.text
    return r.json()


# ── without signing in: nothing ───────────────────────────────────────────────────────────


def test_without_a_session_every_dashboard_route_is_refused(anonymous: httpx.Client) -> None:
    page = anonymous.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/signin?next=%2F"
    deep = anonymous.get("/runs/5?tab=x", headers={"Accept": "text/html,*/*"})
    assert deep.headers["location"] == "/signin?next=%2Fruns%2F5%3Ftab%3Dx"
    for path in (
        "/",  # not a browser page load (no text/html): 401, not a redirect
        "/_dash-layout",
        "/_dash-dependencies",
        "/_reload-hash",
        "/_favicon.ico",
        "/assets/style.css",
        "/assets/kanscope.js",
        "/_dash-component-suites/dash/dcc/dash_core_components.js",
        "/compare?runs=1,2",
    ):
        r = anonymous.get(path)
        assert r.status_code == 401, (path, r.status_code)
        assert "sign in" in r.json()["detail"].lower()
    signin = anonymous.get("/signin?next=/runs")
    assert signin.status_code == 200 and 'name="token"' in signin.text
    assert 'value="/runs"' in signin.text
    assert signin.headers["x-frame-options"] == "DENY"


def test_public_paths_are_matched_exactly(anonymous: httpx.Client) -> None:
    assert anonymous.get("/api/health").status_code == 200
    assert anonymous.get("/api/openapi.json").status_code == 200
    for path in ("/api/healthX", "/api/health/", "/api/health/../datasets", "/api/docsX"):
        r = anonymous.get(path)
        assert r.status_code == 401, (path, r.status_code)
        assert "API token" in r.json()["detail"]
    assert anonymous.get("/api/datasets").status_code == 401


def test_the_issue_attacks_without_a_session_change_and_reveal_nothing(
    anonymous: httpx.Client,
    api: httpx.Client,
    dependencies: list[dict[str, Any]],
    trained_run: dict[str, Any],
) -> None:
    victim = api_upload(api, SECRET_CSV, "victim.csv")
    run = trained_run
    before = dataset_ids(api)

    listing = call(
        anonymous, callback_body(dependencies, "ds-version.data", {"ds-version.data": 1})
    )
    upload = call(anonymous, upload_body(dependencies, SMALL_CSV, "attacker.csv"))
    delete = call(
        anonymous,
        callback_body(
            dependencies,
            "ds-delete.n_clicks",
            {"ds-delete.n_clicks": 1, "ds-select.value": victim["id"], "ds-version.data": 0},
        ),
    )
    download = call(
        anonymous,
        callback_body(
            dependencies,
            "run-export-model.n_clicks",
            {"run-export-model.n_clicks": 1, "run-id.data": run["id"]},
        ),
    )
    for what, r in (
        ("list", listing),
        ("upload", upload),
        ("delete", delete),
        ("download", download),
    ):
        assert r.status_code == 401, (what, r.status_code, r.text[:300])
        assert "victim" not in r.text and "secret_column" not in r.text
    assert dataset_ids(api) == before  # nothing uploaded, nothing deleted
    assert api.get(f"/api/datasets/{victim['id']}").status_code == 200

    # forged, expired and other-token cookies are no session either
    key = session_key(TOKEN)
    forged = {
        "expired": issue_session(key, now=time.time() - SESSION_TTL_S - 5),
        "other token": issue_session(session_key("some-other-token")),
        "tampered": issue_session(key)[:-2] + "xx",
        "garbage": "1.2.3",
    }
    body = callback_body(dependencies, "ds-version.data", {"ds-version.data": 1})
    for what, value in forged.items():
        r = anonymous.post(
            "/_dash-update-component", json=body, headers={"Cookie": f"{COOKIE_NAME}={value}"}
        )
        assert r.status_code == 401, (what, r.status_code)


# ── signed in: the same callbacks work ────────────────────────────────────────────────────


def test_sign_in_sets_a_strict_httponly_expiring_cookie(anonymous: httpx.Client) -> None:
    wrong = anonymous.post("/signin", data={"token": "guess", "next": "/runs"})
    assert wrong.status_code == 401 and "Wrong token" in wrong.text
    assert "set-cookie" not in wrong.headers
    right = anonymous.post("/signin", data={"token": TOKEN, "next": "/runs"})
    assert right.status_code == 303 and right.headers["location"] == "/runs"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", f"max-age={SESSION_TTL_S}"} <= attributes
    assert "secure" not in attributes  # plain http here; see test_secure_cookie_over_https
    # elsewhere after sign-in goes nowhere off-site
    evil = anonymous.post("/signin", data={"token": TOKEN, "next": "//evil.example/x"})
    assert evil.headers["location"] == "/"


def test_with_the_session_cookie_the_dashboard_works(
    browser_session: httpx.Client,
    api: httpx.Client,
    dependencies: list[dict[str, Any]],
    trained_run: dict[str, Any],
) -> None:
    page = browser_session.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "_dash-renderer" in page.text
    layout = browser_session.get("/_dash-layout")
    assert layout.status_code == 200 and "sign-out" in layout.text
    assert browser_session.get("/_dash-dependencies").status_code == 200
    assert browser_session.get("/assets/style.css").status_code == 200

    # upload through the callback
    r = call(browser_session, upload_body(dependencies, SMALL_CSV, "mine.csv"))
    assert r.status_code == 200, r.text
    response = r.json()["response"]
    new_id = response["ds-select"]["value"]
    assert isinstance(new_id, int) and new_id in dataset_ids(api)
    assert "Stored mine.csv" in str(response["ds-upload-alert"])

    # list through the callback
    r = call(
        browser_session, callback_body(dependencies, "ds-version.data", {"ds-version.data": 1})
    )
    assert r.status_code == 200, r.text
    options = r.json()["response"]["ds-select"]["options"]
    assert new_id in [o["value"] for o in options]

    # download the model file of a finished run through the export callback
    run = trained_run
    r = call(
        browser_session,
        callback_body(
            dependencies,
            "run-export-model.n_clicks",
            {"run-export-model.n_clicks": 1, "run-id.data": run["id"]},
        ),
    )
    assert r.status_code == 200, r.text
    download = r.json()["response"]["run-download"]["data"]
    assert download["base64"] is True
    expected = api.get(f"/api/runs/{run['id']}/export/model")
    assert expected.status_code == 200
    assert base64.b64decode(download["content"]) == expected.content

    # delete through the callback
    r = call(
        browser_session,
        callback_body(
            dependencies,
            "ds-delete.n_clicks",
            {"ds-delete.n_clicks": 1, "ds-select.value": new_id, "ds-version.data": 1},
        ),
    )
    assert r.status_code == 200, r.text
    assert "Dataset deleted" in str(r.json()["response"]["ds-delete-alert"])
    assert api.get(f"/api/datasets/{new_id}").status_code == 404


def test_client_values_cannot_reach_other_api_paths(
    browser_session: httpx.Client,
    api: httpx.Client,
    dependencies: list[dict[str, Any]],
    trained_run: dict[str, Any],
) -> None:
    secret = api_upload(api, SECRET_CSV, "secret.csv")
    run = trained_run
    owner = {"id": run["dataset_id"]}
    traversal = f"{run['id']}/../../datasets/{secret['id']}/preview?x="

    # the export callback would have downloaded the other dataset's preview as a "file"
    r = call(
        browser_session,
        callback_body(
            dependencies,
            "run-export-model.n_clicks",
            {"run-export-model.n_clicks": 1, "run-id.data": traversal},
        ),
    )
    assert r.status_code in (200, 204), r.text[:300]  # refused before any API call: no update
    assert r.status_code == 204 or "run-download" not in r.json()["response"]
    assert "secret_column" not in r.text

    # the run page's loader says there is no such run instead of fetching that path
    r = call(
        browser_session, callback_body(dependencies, "run-id.data", {"run-id.data": traversal})
    )
    assert r.status_code == 200, r.text[:300]
    assert "No such run" in str(r.json()["response"]["run-header"]) and "secret" not in r.text

    # "N?cascade=true" would have deleted the dataset together with its runs
    r = call(
        browser_session,
        callback_body(
            dependencies,
            "ds-delete.n_clicks",
            {
                "ds-delete.n_clicks": 1,
                "ds-select.value": f"{owner['id']}?cascade=true",
                "ds-version.data": 0,
            },
        ),
    )
    assert r.status_code == 200
    assert "Choose a dataset to delete" in str(r.json()["response"]["ds-delete-alert"])
    assert api.get(f"/api/datasets/{owner['id']}").status_code == 200
    assert api.get(f"/api/runs/{run['id']}").status_code == 200

    # the dataset page does not preview "1/../2" or a bool, and an edge must be three indices
    for value in (f"{owner['id']}/../{secret['id']}", True, 1.5, [secret["id"]], -3):
        r = call(
            browser_session,
            callback_body(dependencies, "ds-select.value", {"ds-select.value": value}),
        )
        assert r.status_code == 200 and "secret_column" not in r.text, value
        assert "No dataset selected" in r.text, value
    r = call(
        browser_session,
        callback_body(
            dependencies,
            "run-selected-edge.data",
            {"run-selected-edge.data": ["0/../../..", 0, 0], "run-id.data": run["id"]},
        ),
    )
    assert r.status_code == 200 and r.json()["response"]["run-candidates"]["data"] == []


def test_a_cookie_session_refuses_cross_site_writes(
    browser_session: httpx.Client, api: httpx.Client
) -> None:
    files = {"file": ("x.csv", SMALL_CSV, "text/csv")}
    before = dataset_ids(api)
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of the same host
        {"Origin": "http://127.0.0.1:1"},
    ):
        r = browser_session.post("/api/datasets", files=files, headers=headers)
        assert r.status_code == 403, (headers, r.status_code)
    assert dataset_ids(api) == before
    r = browser_session.post(
        "/api/datasets", files=files, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert r.status_code == 201, r.text
    # the sign-out form drops the cookie
    out = browser_session.post("/signout")
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert COOKIE_NAME not in browser_session.cookies
    assert browser_session.get("/_dash-layout").status_code == 401


# ── the guard's details, in process ───────────────────────────────────────────────────────


@pytest.fixture
def guarded_app(settings: Any) -> Iterator[TestClient]:
    app = create_app(
        settings.model_copy(update={"api_token": TOKEN, "session_ttl_s": SESSION_TTL_S}),
        start_executor=False,
    )
    with TestClient(app, follow_redirects=False) as c:
        yield c


def test_session_expiry_and_token_change(guarded_app: TestClient) -> None:
    key = session_key(TOKEN)
    fresh = issue_session(key, now=time.time() - SESSION_TTL_S + 30)
    stale = issue_session(key, now=time.time() - SESSION_TTL_S - 30)
    future = issue_session(key, now=time.time() + 3600)
    for value, expected in ((fresh, 200), (stale, 401), (future, 401)):
        guarded_app.cookies.set(COOKIE_NAME, value)
        assert guarded_app.get("/_dash-layout").status_code == expected
        assert guarded_app.get("/api/datasets").status_code == expected
    guarded_app.cookies.clear()
    # a cookie made under another token does not open this server
    guarded_app.cookies.set(COOKIE_NAME, issue_session(session_key(TOKEN + "-old")))
    assert guarded_app.get("/api/datasets").status_code == 401


def test_secure_cookie_over_https_and_no_sign_in_without_a_token(
    guarded_app: TestClient, settings: Any
) -> None:
    r = guarded_app.post("https://testserver/signin", data={"token": TOKEN, "next": "/"})
    assert r.status_code == 303
    assert "secure" in {p.strip().lower() for p in r.headers["set-cookie"].split(";")}
    open_app = create_app(settings, start_executor=False)
    with TestClient(open_app, follow_redirects=False) as c:
        assert c.get("/signin").headers["location"] == "/"
        assert c.get("/_dash-layout").status_code == 200  # no token: nothing to sign in to
        assert "sign-out" not in c.get("/_dash-layout").text


def test_websockets_need_the_token_too(guarded_app: TestClient) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as refused, guarded_app.websocket_connect("/anything"):
        pass
    assert refused.value.code == 1008


def test_every_response_carries_the_security_headers(guarded_app: TestClient) -> None:
    from app.api.middleware import SECURITY_HEADERS

    responses = {
        "api answer": guarded_app.get("/api/datasets", headers=BEARER),
        "health (public)": guarded_app.get("/api/health"),
        "refused (401)": guarded_app.get("/api/datasets"),
        "page": guarded_app.get("/", headers={**BEARER, "Accept": "text/html"}),
        "asset": guarded_app.get("/assets/style.css", headers=BEARER),
        "sign-in page": guarded_app.get("/signin"),
        "too large (413)": guarded_app.post(
            "/api/datasets", headers={**BEARER, "content-length": str(10**12)}
        ),
    }
    for what, r in responses.items():
        for name, value in SECURITY_HEADERS:
            assert r.headers.get_list(name.decode()) == [value.decode()] or (
                what == "sign-in page" and name == b"content-security-policy"
            ), (what, r.status_code, name, r.headers.get_list(name.decode()))
    assert responses["refused (401)"].status_code == 401
    assert responses["too large (413)"].status_code == 413
    # the sign-in page keeps its own, stricter policy (one header, not two)
    policy = responses["sign-in page"].headers.get_list("content-security-policy")
    assert len(policy) == 1 and "default-src 'none'" in policy[0]
    assert "frame-ancestors 'none'" in policy[0]


# ── too many wrong tokens from one address ────────────────────────────────────────────────

GUESSES = 3  # KANSCOPE_AUTH_FAILURES_PER_MINUTE in these tests


def locked_out(r: httpx.Response) -> int:
    """A 429 for a locked-out address: says so and when to try again; returns Retry-After."""
    assert r.status_code == 429, (r.status_code, r.text[:300])
    assert "Too many wrong tokens" in r.text and "not checked" in r.text, r.text[:300]
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 60, retry
    return retry


@pytest.fixture
def limited_app(settings: Any) -> TestClient:
    """The guarded app with a small wrong-token limit; clients are made per address."""
    return create_app(
        settings.model_copy(update={"api_token": TOKEN, "auth_failures_per_minute": GUESSES}),
        start_executor=False,
    )


def test_wrong_tokens_lock_the_address_out_of_token_checks(limited_app: Any) -> None:
    guesser = TestClient(limited_app, client=("203.0.113.7", 4000), follow_redirects=False)
    other = TestClient(limited_app, client=("203.0.113.8", 4000), follow_redirects=False)
    with guesser, other:
        signed_in = guesser.post("/signin", data={"token": TOKEN, "next": "/"})
        assert signed_in.status_code == 303  # a session from before the guessing
        cookie = guesser.cookies[COOKIE_NAME]
        guesser.cookies.clear()
        for k in range(GUESSES):
            wrong = {"Authorization": f"Bearer guess-{k}"}
            assert guesser.get("/api/datasets", headers=wrong).status_code == 401
        # now even the right token is not compared, whichever way it comes
        locked_out(guesser.get("/api/datasets", headers=BEARER))
        locked_out(guesser.get("/api/datasets", headers={"X-API-Token": TOKEN}))
        locked_out(guesser.get("/_dash-layout", headers=BEARER))
        form = guesser.post("/signin", data={"token": TOKEN, "next": "/"})
        locked_out(form)
        assert "set-cookie" not in form.headers and 'id="signin-form"' in form.text
        # what presents no token is as before: refused without it, served with a session
        assert guesser.get("/api/datasets").status_code == 401
        guesser.cookies.set(COOKIE_NAME, cookie)
        assert guesser.get("/api/datasets").status_code == 200
        # another address is not affected
        assert other.get("/api/datasets", headers=BEARER).status_code == 200


def test_wrong_sign_ins_count_like_wrong_headers(limited_app: Any) -> None:
    with TestClient(limited_app, client=("198.51.100.4", 4000), follow_redirects=False) as c:
        for k in range(GUESSES):
            r = c.post("/signin", data={"token": f"guess-{k}", "next": "/"})
            assert r.status_code == 401 and "Wrong token" in r.text
        locked_out(c.get("/api/datasets", headers=BEARER))


def test_the_limit_can_be_turned_off(settings: Any) -> None:
    app = create_app(
        settings.model_copy(update={"api_token": TOKEN, "auth_failures_per_minute": 0}),
        start_executor=False,
    )
    with TestClient(app) as c:
        for k in range(3 * GUESSES):
            assert c.get("/api/datasets", headers={"X-API-Token": f"g{k}"}).status_code == 401
        assert c.get("/api/datasets", headers=BEARER).status_code == 200


def test_a_short_token_is_refused_and_not_repeated() -> None:
    from pydantic import ValidationError

    from app.config import MIN_TOKEN_CHARS, Settings

    short = "hunter2-hunter2"
    assert len(short) < MIN_TOKEN_CHARS
    with pytest.raises(ValidationError) as refused:
        Settings(api_token=short)
    message = str(refused.value)
    assert f"at least {MIN_TOKEN_CHARS}" in message and "secrets.token_urlsafe" in message
    assert short not in message  # an error message may end up in a log
    assert Settings(api_token="").api_token is None  # empty: no token auth
    assert Settings(api_token=TOKEN).api_token == TOKEN


def test_the_dashboard_keeps_working_while_its_host_is_locked_out(tmp_path: Any) -> None:
    """The dashboard calls the API from this host with a session it signs itself, never with
    the token: wrong tokens from 127.0.0.1 (the dashboard's own address here) lock out only
    those who present a token."""
    live = LiveServer(
        tmp_path,
        {
            "KANSCOPE_DATABASE_URL": f"sqlite:///{tmp_path / 'kanscope.sqlite3'}",
            "KANSCOPE_API_TOKEN": TOKEN,
            "KANSCOPE_AUTH_FAILURES_PER_MINUTE": str(GUESSES),
            "KANSCOPE_EXECUTOR": "local",
        },
        dashboard=True,
    )
    # the browser: another loopback address, so that its sign-in is not locked out as well
    browser_side = httpx.HTTPTransport(local_address="127.0.0.2")
    try:
        live.wait_healthy()
        with (
            httpx.Client(base_url=live.url, headers=BEARER, timeout=60) as script,
            httpx.Client(base_url=live.url, timeout=60, transport=browser_side) as browser,
        ):
            dataset = api_upload(script, SMALL_CSV, "before.csv")
            deps = script.get("/_dash-dependencies").json()
            for k in range(GUESSES):  # from 127.0.0.1, as the dashboard's calls come
                wrong = {"Authorization": f"Bearer guess-{k}"}
                assert script.get("/api/datasets", headers=wrong).status_code == 401
            locked_out(script.get("/api/datasets"))
            assert browser.post("/signin", data={"token": TOKEN}).status_code == 303
            r = call(browser, callback_body(deps, "ds-version.data", {"ds-version.data": 1}))
            assert r.status_code == 200, r.text
            options = r.json()["response"]["ds-select"]["options"]
            assert dataset["id"] in [o["value"] for o in options]  # the API answered it
    finally:
        live.stop()
        from app.db.session import forget_databases

        forget_databases()


# ── the checks themselves ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        ("12", 12),
        (0, None),
        (-1, None),
        (True, None),
        (2.0, None),
        ("7/../../datasets/2/preview?x=", None),
        ("3?cascade=true", None),
        (" 4", None),
        ("٣", None),  # a digit, but not ASCII
        ("12\n", None),
        (2**63, None),
        (None, None),
        ([1], None),
    ],
)
def test_positive_int(value: Any, expected: int | None) -> None:
    assert positive_int(value) == expected


def test_list_and_edge_checks() -> None:
    assert positive_ints([3, "4"], 5) == [3, 4]
    assert positive_ints([3, "4?x"], 5) is None
    assert positive_ints([1, 2, 3], 2) is None
    assert valid_edge([0, 1, 2]) == (0, 1, 2)
    assert valid_edge([0, 1]) is None and valid_edge(["0/..", 1, 2]) is None
    assert valid_edge([0, -1, 2]) is None and valid_edge("012") is None


def test_safe_next_keeps_redirects_on_this_site() -> None:
    assert safe_next("/runs/5") == "/runs/5"
    assert safe_next("/compare?runs=1,2") == "/compare?runs=1,2"
    for bad in ("//evil.example", "/\\evil.example", "https://evil.example/", "runs", "", None):
        assert safe_next(bad) == "/", bad
    assert safe_next("/a\r\nSet-Cookie: x=1") == "/"
    assert safe_next("/runs\n") == "/"  # "$" would let a final newline through


def test_the_api_client_sends_nothing_for_a_bad_value() -> None:
    """Pointed at a port where nothing listens: a request that were sent would fail with
    "Cannot reach the API"; a refused value fails with InvalidRequestError first."""
    from tests.app.api_helpers import free_port

    api_client.configure(f"http://127.0.0.1:{free_port()}/api", "token")
    refused: list[Any] = [
        lambda: api_client.get_run("7/../../datasets/2/preview?x="),  # type: ignore[arg-type]
        lambda: api_client.delete_dataset("3?cascade=true"),  # type: ignore[arg-type]
        lambda: api_client.delete_dataset(True),
        lambda: api_client.run_edge(1, (0, "1/../..", 2)),  # type: ignore[arg-type]
        lambda: api_client.export_run(1, "../datasets"),  # type: ignore[arg-type]
        lambda: api_client.get_leaderboard(1, "../../runs/1"),
        lambda: api_client.get_leaderboard(1, "abc\n"),
        lambda: api_client.run_metrics(1, after_step="5&limit=1"),  # type: ignore[arg-type]
        lambda: api_client.run_predictions(1, "all"),  # type: ignore[arg-type]
    ]
    for attempt in refused:
        with pytest.raises(api_client.InvalidRequestError, match="nothing was sent"):
            attempt()
    with pytest.raises(api_client.ApiError, match="Cannot reach the API"):
        api_client.get_run(7)  # a valid id is sent (and finds no server here)
