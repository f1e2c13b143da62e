"""The dashboard behind KANSCOPE_API_TOKEN in Chromium: without signing in every page is the
sign-in page; a wrong token is refused; the right one leads to the page first asked for, where
the dashboard works (its callbacks reach the API through the session); the cookie is hidden from
scripts; signing out ends it."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server_process import VIEWPORT, ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "e2e-dashboard-token-7f3a"
CSV = "x1,x2,y\n1,2,3\n4,5,9\n7,8,15\n2,2,4\n"


@pytest.fixture(scope="module")
def guarded_server() -> Iterator[ServerProcess]:
    data_dir = Path(tempfile.mkdtemp(prefix="kanscope-e2e-auth-"))
    server = ServerProcess(data_dir, {"KANSCOPE_API_TOKEN": TOKEN})
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def fresh_page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()


def sign_in(page, token: str) -> None:
    page.fill("#signin-token", token)
    page.click("#signin-submit")


@pytest.mark.timeout(180)
def test_sign_in_then_the_dashboard_works_and_sign_out_ends_it(
    fresh_page, guarded_server, screenshot_dir, tmp_path
):
    page, base = fresh_page, guarded_server.url

    # not signed in: the page asked for becomes the sign-in page, and nothing of the app loads
    page.goto(base + "/runs")
    page.wait_for_selector("#signin-form")
    assert re.search(r"/signin\?next=%2Fruns$", page.url), page.url
    assert page.locator("#runs-table").count() == 0
    page.screenshot(path=screenshot_dir / "auth_01_signin.png")

    sign_in(page, "not-the-token")
    page.wait_for_selector("#signin-error")
    assert "Wrong token" in page.inner_text("#signin-error")
    assert page.context.cookies() == []

    # the right token: back to /runs, and the dashboard's callbacks work
    sign_in(page, TOKEN)
    page.wait_for_url(re.compile(r"/runs$"))
    page.wait_for_selector("#runs-table")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["kanscope_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert "kanscope_session" not in page.evaluate("document.cookie")

    page.click("a.nav-link[href='/']")
    page.wait_for_selector("#ds-upload")
    csv = tmp_path / "signed-in.csv"
    csv.write_text(CSV)
    page.set_input_files("#ds-upload input[type=file]", str(csv))
    page.wait_for_selector("#ds-upload-alert .alert-success", timeout=30_000)
    assert "4 rows × 3 columns" in page.inner_text("#ds-upload-alert")
    page.wait_for_function(
        "() => document.querySelector('#ds-select').innerText.includes('signed-in')"
    )
    uploaded = guarded_server.api.get("/datasets", headers={"Authorization": f"Bearer {TOKEN}"})
    assert uploaded.status_code == 200
    assert [d["name"] for d in uploaded.json()] == ["signed-in"]
    page.screenshot(path=screenshot_dir / "auth_02_signed_in.png", full_page=True)
    assert not page.js_errors, page.js_errors

    # sign out: the cookie is gone, and the dashboard is the sign-in page again
    page.click("#sign-out")
    page.wait_for_selector("#signin-form")
    assert page.context.cookies() == []
    page.goto(base + "/")
    page.wait_for_selector("#signin-form")
    assert page.locator("#ds-upload").count() == 0


@pytest.mark.timeout(120)
def test_without_signing_in_the_api_behind_the_page_refuses(fresh_page, guarded_server):
    page = fresh_page
    page.goto(guarded_server.url + "/train")
    page.wait_for_selector("#signin-form")
    # what the dashboard's scripts would fetch, from a page of the same origin (the sign-in
    # page's Content-Security-Policy allows it no fetches at all)
    page.goto(guarded_server.url + "/api/health")
    statuses = page.evaluate(
        """async () => {
          const get = async (path, init) =>
            (await fetch(path, {...init, signal: AbortSignal.timeout(10000)})).status;
          return {
            layout: await get('/_dash-layout'),
            deps: await get('/_dash-dependencies'),
            callback: await get('/_dash-update-component', {
              method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}),
            datasets: await get('/api/datasets'),
          };
        }"""
    )
    assert statuses == {"layout": 401, "deps": 401, "callback": 401, "datasets": 401}
