"""Bodies in transit share one budget per process: slow uploads cannot pile up memory. A real
uvicorn server on loopback, raw sockets holding bodies open."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.api.body_budget import BodyBudget
from app.errors import Overloaded
from app.main import create_app
from tests.conftest import make_settings
from tests.live_server import serve_in_thread

REQUEST_LIMIT = 256 * 1024
BUDGET = 600 * 1024  # two full-size bodies fit, a third does not


def test_the_budget_counts_and_refuses() -> None:
    b = BodyBudget(100)
    b.reserve(60)
    with pytest.raises(Overloaded, match="IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT"):
        b.reserve(41)
    b.reserve(40)
    b.release(100)
    assert b.in_transit == 0
    BodyBudget(0).reserve(10**12)  # 0: unbounded


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 40).save(buf, format="PNG")
    return buf.getvalue()


def _open_slow(port: int, length: int, sent: int = 4) -> socket.socket:
    """A request declaring `length` bytes of body that sends only `sent` of them."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        f"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: image/png\r\nContent-Length: {length}\r\n\r\n".encode()
        + (b"\x89PNG" + b"\0" * sent)[:sent]
    )
    return s


def test_bodies_received_beyond_the_budget_get_503_and_the_budget_comes_back(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        tiny_models_dir,
        tmp_path,
        max_request_bytes=REQUEST_LIMIT,
        max_image_bytes=REQUEST_LIMIT,
        max_body_bytes_in_flight=BUDGET,
        teach_max_zip_bytes=REQUEST_LIMIT,  # the budget is never below the largest body
        body_timeout_s=30.0,
    )
    app = create_app(settings)
    with serve_in_thread(app) as port:
        url = f"http://127.0.0.1:{port}/v1/models/tiny/predict"
        # Declaring a large body reserves nothing: trickling clients cannot hold the budget.
        trickling = [_open_slow(port, REQUEST_LIMIT) for _ in range(4)]
        try:
            time.sleep(0.5)
            assert app.state.body_budget.in_transit <= 4 * 4
            r = httpx.post(url, content=b"\0" * REQUEST_LIMIT, timeout=10)
            assert r.status_code == 415, r.text  # read whole: zeros are not an image
        finally:
            for s in trickling:
                s.close()
        # Bodies that did arrive are counted: two nearly whole ones leave no room for a third.
        sent = REQUEST_LIMIT - 1024
        slow = [_open_slow(port, REQUEST_LIMIT, sent) for _ in range(2)]
        try:
            deadline = time.monotonic() + 30
            while app.state.body_budget.in_transit < 2 * sent:
                assert time.monotonic() < deadline, app.state.body_budget.in_transit
                time.sleep(0.02)
            t0 = time.monotonic()
            r = httpx.post(url, content=b"\0" * REQUEST_LIMIT, timeout=10)
            assert time.monotonic() - t0 < 2
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert "IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT" in r.json()["detail"]
            # A small body still fits beside them.
            assert httpx.post(url, content=_png(), timeout=10).status_code == 200
        finally:
            for s in slow:
                s.close()
        # Their shares come back once they are gone (the server notices the closed sockets).
        deadline = time.monotonic() + 10
        while True:
            r = httpx.post(url, content=b"\0" * REQUEST_LIMIT, timeout=10)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 415, r.text  # zeros are not an image: the body was read


def test_the_budget_fits_the_largest_body_a_route_takes(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    # A teach zip may be larger than the budget's default: such a body was answered
    # "retry in 1 s" forever. The budget is raised to it, as to max_request_bytes.
    settings = make_settings(
        tiny_models_dir,
        tmp_path,
        max_body_bytes_in_flight=1024 * 1024,
        max_request_bytes=2 * 1024 * 1024,
        teach_max_zip_bytes=3 * 1024 * 1024,
    )
    assert create_app(settings).state.body_budget.limit == 3 * 1024 * 1024
    unbounded = make_settings(tiny_models_dir, tmp_path, max_body_bytes_in_flight=0)
    assert create_app(unbounded).state.body_budget.limit == 0
