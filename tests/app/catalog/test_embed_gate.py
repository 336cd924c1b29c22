"""Catalog routes that embed images (item adds, search by image) are bounded like predict:
beyond the model queue's limit + pipelines in flight, 503 + Retry-After (problem+json) at
once. They ran in the thread pool with no bound before: 24 clients got 759 x 201 and no 503
with IMGCLASS_QUEUE_LIMIT=1, every request waiting its turn."""

from __future__ import annotations

import io
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import DATA
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow  # held embeds (round 29: the fast subset in 2 min)

CLIENTS = 16
PHOTO = (DATA / "photos/matplotlib/grace_hopper.jpg").read_bytes()
PER_CLIENT = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "IMGCLASS_ENABLED_MODELS": '["products"]',
        "IMGCLASS_QUEUE_LIMIT": "1",
        "IMGCLASS_PIPELINES": "1",
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
    with live_server(tmp_path_factory.mktemp("gate"), env) as s:
        r = httpx.post(f"{s.base}/v1/catalogs", json={"name": "g", "model": "products"})
        assert r.status_code == 201, r.text
        yield s


def _burst(send: object) -> list[httpx.Response]:
    out: list[httpx.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            barrier.wait()
            for _ in range(PER_CLIENT):
                r = send(c)  # type: ignore[operator]
                with lock:
                    out.append(r)

    with ThreadPoolExecutor(CLIENTS) as ex:
        for f in [ex.submit(client) for _ in range(CLIENTS)]:
            f.result()
    return out


def _check(responses: list[httpx.Response], ok: int) -> None:
    statuses = {r.status_code for r in responses}
    assert statuses <= {ok, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert refused and len(refused) < len(responses)
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 503 and "busy" in r.json()["detail"]
        # paced like a predict refusal (IMGCLASS_OVERLOAD_PAUSE_MS, 100 by default)
        assert r.elapsed.total_seconds() >= 0.09


def test_item_adds_beyond_the_bound_get_503_with_retry_after(server: LiveServer) -> None:
    url = f"{server.base}/v1/catalogs/g/items"

    def send(c: httpx.Client) -> httpx.Response:
        return c.post(url, files=[("file", ("a.jpg", PHOTO, "image/jpeg"))], data={"label": "x"})

    responses = _burst(send)
    _check(responses, 201)
    added = sum(r.status_code == 201 for r in responses)
    # Every accepted add was stored, and only those.
    listing = httpx.get(f"{server.base}/v1/catalogs/g", timeout=10).json()
    assert listing["item_count"] == added


def test_search_by_image_beyond_the_bound_gets_503(server: LiveServer) -> None:
    url = f"{server.base}/v1/catalogs/g/search?k=1"
    responses = _burst(lambda c: c.post(url, content=PHOTO))
    _check(responses, 200)
    # The gate is released after every request, refused or not: one alone is accepted.
    assert httpx.post(url, content=PHOTO, timeout=30).status_code == 200


def test_zip_uploads_and_reindex_share_the_bound(server: LiveServer) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/1.jpg", PHOTO)
        z.writestr("b/1.jpg", PHOTO)
    url = f"{server.base}/v1/catalogs/g/items:zip"
    responses = _burst(lambda c: c.post(url, content=buf.getvalue()))
    _check(responses, 200)
    # forced: a catalog already bound to the served build is otherwise answered at once;
    # reindexes of one catalog in one process also refuse each other (409)
    reindex = f"{server.base}/v1/catalogs/g/reindex?force=true"
    responses = _burst(lambda c: c.post(reindex))
    _check([r for r in responses if r.status_code != 409], 200)


def test_slow_uploads_hold_no_slot(server: LiveServer) -> None:
    """Requests still sending their bodies do not count: with every slot's worth of slow
    uploads open (and more), an add and a search by image go through at once. The gate was
    taken before the body once, and slow uploads made catalog writes 503 until they timed out."""
    host, port = server.base.removeprefix("http://").split(":")
    slow = []
    for path in ["/v1/catalogs/g/items?label=x", "/v1/catalogs/g/search?k=1"] * 4:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(PHOTO)}\r\n\r\n".encode()
            + PHOTO[:100]
        )
        slow.append(s)
    try:
        time.sleep(0.3)  # the slow requests are routed and waiting for their bodies
        r = httpx.post(
            f"{server.base}/v1/catalogs/g/items?label=y",
            content=PHOTO,
            headers={"content-type": "image/jpeg"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        r = httpx.post(f"{server.base}/v1/catalogs/g/search?k=1", content=PHOTO, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        for s in slow:
            s.close()
