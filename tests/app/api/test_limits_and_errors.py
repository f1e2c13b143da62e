"""Body limit (413 as JSON, with Content-Length and chunked, in-process and through a real
uvicorn), the API token checked before the body, JSON 404/422/503, upload validation."""

from __future__ import annotations

import httpx
import pytest

from tests.app.api_helpers import make_settings

ELEVEN_MB = 11 * 1024 * 1024


def csv_of_size(n_bytes: int) -> bytes:
    row = b"1.0,2.0,3.0\n"
    return b"a,b,c\n" + row * (n_bytes // len(row) + 1)


def multipart(content: bytes, boundary: str = "kanscopeboundary") -> tuple[bytes, str]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"'
            f"\r\nContent-Type: text/csv\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def chunks(data: bytes, size: int = 256 * 1024):
    for k in range(0, len(data), size):
        yield data[k : k + size]


def assert_413_json(r: httpx.Response) -> None:
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/json")
    assert "larger than the limit" in r.json()["detail"]


@pytest.fixture
def app_client(sqlite_url, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from app.main import create_app

    def make(**overrides):
        return TestClient(
            create_app(
                make_settings(sqlite_url, tmp_path, **overrides),
                start_executor=False,
                mount_dashboard=False,
            )
        )

    return make


def test_413_in_process_with_content_length_and_chunked(app_client):
    body, ctype = multipart(csv_of_size(ELEVEN_MB))
    with app_client() as c:
        assert_413_json(c.post("/api/datasets", content=body, headers={"content-type": ctype}))
        assert_413_json(
            c.post("/api/datasets", content=chunks(body), headers={"content-type": ctype})
        )
        # a small upload still works afterwards
        small, _ = multipart(b"a,b\n1,2\n3,4\n")
        ok = c.post("/api/datasets", content=small, headers={"content-type": ctype})
        assert ok.status_code == 201, ok.text


def test_lying_content_length_is_still_refused(app_client):
    """A client declaring a small Content-Length but streaming more is cut off by the counter."""
    from app.api.middleware import ApiGuardMiddleware

    received: list[int] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            received.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = ApiGuardMiddleware(app, max_body_bytes=1000)
    sent: list[dict] = []
    parts = [b"x" * 600, b"x" * 600]

    async def receive():
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    async def send(message):
        sent.append(message)

    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    scope = {"type": "http", "path": "/api/datasets", "headers": [(b"content-length", b"10")]}
    # a thread of its own: a Playwright test earlier in this process leaves its loop running
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, guard(scope, receive, send)).result()
    assert sent[0]["status"] == 413
    assert b"larger than the limit" in sent[1]["body"]


@pytest.mark.slow
def test_413_through_real_server_with_content_length_and_chunked(live_server_factory):
    server = live_server_factory(KANSCOPE_MAX_UPLOAD_BYTES=str(10 * 1024 * 1024))
    body, ctype = multipart(csv_of_size(ELEVEN_MB))
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert_413_json(c.post("/api/datasets", content=body, headers={"content-type": ctype}))
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/api/datasets", content=chunks(body), headers={"content-type": ctype})
        assert "content-length" not in r.request.headers  # really sent chunked
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert_413_json(r)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        ok = c.post("/api/datasets", files={"file": ("s.csv", b"a,b\n1,2\n", "text/csv")})
        assert ok.status_code == 201


def test_token_checked_before_the_body(app_client):
    body, ctype = multipart(csv_of_size(ELEVEN_MB))
    with app_client(api_token="s3cret-token-for-tests") as c:
        r = c.post("/api/datasets", content=chunks(body), headers={"content-type": ctype})
        assert r.status_code == 401 and "API token" in r.json()["detail"]
        assert c.get("/api/health").status_code == 200  # public
        assert c.get("/api/datasets").status_code == 401
        ok = c.get("/api/datasets", headers={"Authorization": "Bearer s3cret-token-for-tests"})
        assert ok.status_code == 200 and ok.json() == []


def test_json_errors_everywhere(app_client):
    with app_client() as c:
        r = c.get("/api/no/such/thing")
        assert r.status_code == 404 and r.json()["detail"].startswith("No API endpoint")
        r = c.get("/api/runs/abc")
        assert r.status_code == 422 and "run_id" in r.json()["detail"]
        r = c.get("/api/runs/12345")
        assert r.status_code == 404 and r.json() == {"detail": "Run 12345 does not exist."}
        r = c.post("/api/runs", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.headers["content-type"] == "application/json"
        r = c.get("/api/datasets/1/preview", params={"limit": 0})
        assert r.status_code == 422 and "limit" in r.json()["detail"]
        assert c.get("/api/docs").status_code == 200
        assert "/api/runs/{run_id}/network" in c.get("/api/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"a,b\n", "no data rows"),
        (b"a,a\n1,2\n", "unique"),
        (b"a,,c\n1,2,3\n", "needs a name"),
        (b"\xff\xfe\x00a,b\n", "not UTF-8"),
    ],
)
def test_bad_csv_is_422(app_client, content, fragment):
    with app_client() as c:
        r = c.post("/api/datasets", files={"file": ("x.csv", content, "text/csv")})
        assert r.status_code == 422 and fragment in r.json()["detail"], r.json()


def test_upload_types_and_preview(app_client):
    csv = b"x, label ,y\n1, a ,2.5\n2,b,\n3, c,NaN\n"
    with app_client() as c:
        ds = c.post(
            "/api/datasets", files={"file": ("t.csv", csv, "text/csv")}, data={"name": "tiny"}
        ).json()
        assert ds["name"] == "tiny" and ds["n_rows"] == 3
        cols = {col["name"]: col for col in ds["columns"]}
        assert cols["x"]["kind"] == "numeric" and cols["x"]["mean"] == 2.0
        assert cols["label"]["kind"] == "categorical" and cols["label"]["top_values"]
        assert cols["y"]["n_missing"] == 2
        p = c.get(f"/api/datasets/{ds['id']}/preview", params={"limit": 2}).json()
        assert p["columns"] == ["x", "label", "y"] and p["rows"] == [[1, "a", 2.5], [2, "b", None]]


def test_database_unavailable_is_503(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app

    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    app = create_app(make_settings(url, tmp_path), start_executor=False, mount_dashboard=False)
    with TestClient(app) as c:
        for path in ("/api/runs", "/api/health", "/api/datasets/1"):
            r = c.get(path)
            assert r.status_code == 503, (path, r.text)
            assert "database is unavailable" in r.json()["detail"]
            assert r.headers["retry-after"] == "5"
