"""HEAD on GET routes (app/api/head.py): the GET's status and headers, no body, through the
real uvicorn server and in-process; two Host headers are a 400 (app/api/guards.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings
from tests.live_server import read_until_closed, serve_in_thread


@pytest.fixture(scope="module")
def client(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tiny_models_dir, tmp_path_factory.mktemp("head"))
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/readyz",
        "/v1/models",
        "/v1/models/tiny",
        "/v1/models/tiny/download",
        "/v2/health/ready",
    ],
)
def test_head_answers_like_get_without_a_body(client: TestClient, path: str) -> None:
    got = client.get(path)
    head = client.head(path)
    assert got.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers.get("content-length") == str(len(got.content))


def test_head_of_an_unknown_model_is_its_404(client: TestClient) -> None:
    r = client.head("/v1/models/nope")
    assert r.status_code == 404 and r.content == b""
    assert r.headers["content-type"] == "application/problem+json"


def test_head_on_a_post_route_is_405(client: TestClient) -> None:
    r = client.head("/v1/models/tiny/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_a_405_says_what_is_allowed(client: TestClient) -> None:
    """RFC 9110: a 405 carries Allow (the problem handler dropped it); the detail names it."""
    r = client.delete("/v1/models/tiny/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["detail"] == "DELETE is not allowed on /v1/models/tiny/predict; allowed: POST."
    r = client.post("/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/catalogs", "GET, HEAD, POST"),
        ("/v1/catalogs/shoes", "DELETE, GET, HEAD"),
        ("/v1/catalogs/shoes/items", "GET, HEAD, POST"),
        ("/v1/models/tiny", "DELETE, GET, HEAD"),
        ("/v1/jobs/abc", "DELETE, GET, HEAD"),
    ],
)
def test_a_405_lists_every_method_of_the_path(client: TestClient, path: str, allow: str) -> None:
    """GET and POST (or DELETE) of one path are separate routes; Starlette named only the first
    one's methods, so Allow said `POST` on /v1/catalogs, which also answers GET."""
    r = client.request("OPTIONS", path)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert r.json()["detail"].endswith(f"allowed: {allow}.")


@pytest.fixture(scope="module")
def port(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    app = create_app(
        make_settings(
            tiny_models_dir, tmp_path_factory.mktemp("head-live"), allowed_hosts=["127.0.0.1"]
        )
    )
    with serve_in_thread(app) as number:
        yield number


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        got, _, _ = read_until_closed(s, b"", 5.0)
    return got


def test_head_over_a_real_server_sends_headers_only(port: int) -> None:
    got = _exchange(
        port,
        b"HEAD /v1/models/tiny HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"", got[:300]
    assert b"content-length: " in head.lower()


@pytest.mark.parametrize(
    "hosts",
    [
        (b"evil.example", b"127.0.0.1"),
        (b"127.0.0.1", b"evil.example"),
        (b"127.0.0.1", b"127.0.0.1"),
    ],
)
def test_two_host_headers_are_a_400(port: int, hosts: tuple[bytes, bytes]) -> None:
    """The allow-list read the last Host line: 'evil' then an allowed name passed."""
    got = _exchange(
        port,
        b"GET /v1/models HTTP/1.1\r\nHost: %s\r\nHost: %s\r\nConnection: close\r\n\r\n" % hosts,
    )
    assert got.startswith(b"HTTP/1.1 400 "), got[:300]
    assert b"more than one Host header" in got


@pytest.mark.parametrize(
    ("path", "allow"),
    [("/v2/health/live", "GET, HEAD"), ("/v2/models/tiny/infer", "POST")],
)
def test_a_v2_405_lists_the_routes_own_methods(client: TestClient, path: str, allow: str) -> None:
    """/v2's catch-all takes GET, POST, PUT and DELETE (to answer in the protocol's shape); it
    is not one of the resource's methods."""
    r = client.request("OPTIONS", path)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert r.json() == {"error": f"OPTIONS is not allowed on {path}; allowed: {allow}."}


def test_head_is_counted_and_logged_under_its_route(client: TestClient) -> None:
    """Round 31: a HEAD was counted as route `<unmatched>` (the route went into the copied
    scope the inner app saw), so HEAD probes were lumped in with 404s."""
    assert client.head("/v1/models/tiny").status_code == 200
    assert client.head("/healthz").status_code == 200
    text = client.get("/metrics").text
    for route, model in (("/v1/models/{name}", "tiny"), ("/healthz", "")):
        line = (
            f'imgclass_requests_total{{method="HEAD",model="{model}",route="{route}",status="200"}}'
        )
        assert line in text, [t for t in text.splitlines() if 'method="HEAD"' in t]
