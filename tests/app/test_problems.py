"""app/api/problems.py: an answered client error frees its request at once.

Round 23 found workers left hundreds of MB above their fresh size by refused 5.4 MB JSON
bodies: the error raised in the thread pool sat in a reference cycle (anyio's Future -> the
error -> its traceback -> the frame awaiting the Future), so every frame's locals (the body,
its parsed text) waited for a full garbage collection. These tests look for exactly that: a
frame, freed only by the cycle collector, that still holds the big body.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import httpx
import pytest
from fastapi.testclient import TestClient

from app.errors import forget_frames
from app.http_guard import HeadGuardedProtocol
from app.main import create_app
from tests.conftest import make_settings
from tests.live_server import serve_in_thread

BIG = 1_500_000


def _frames_holding_big_values(garbage: list[object]) -> list[str]:
    held = []
    for obj in garbage:
        if isinstance(obj, FrameType):
            big = [
                name
                for name, value in obj.f_locals.items()
                if isinstance(value, str | bytes | bytearray) and len(value) >= BIG
            ]
            if big:
                held.append(f"{obj.f_code.co_filename}:{obj.f_code.co_name} {big}")
    return held


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """What the cycle collector finds after the test's request (DEBUG_SAVEALL keeps it)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[object] = []
    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _collect_into(found: list[object]) -> None:
    gc.collect()
    found.extend(gc.garbage)


def test_a_refused_json_body_is_not_kept_by_a_reference_cycle(
    client: TestClient, saved_garbage: list[object]
) -> None:
    # A bare string where {"b64": ...} belongs: parsed in the thread pool, then refused.
    body = json.dumps({"images": [base64.b64encode(os.urandom(BIG)).decode()]})
    name = client.get("/v1/models").json()["models"][0]["name"]
    r = client.post(
        f"/v1/models/{name}/predict", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    _collect_into(saved_garbage)
    assert _frames_holding_big_values(saved_garbage) == []


def test_forget_frames_walks_cause_and_context() -> None:
    def fail() -> None:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            try:
                raise ValueError("middle") from inner
            except ValueError:
                raise RuntimeError("outer")  # noqa: B904 (the implicit __context__ is the point)

    with pytest.raises(RuntimeError) as info:
        fail()
    outer = info.value
    middle = outer.__context__
    assert middle is not None and middle.__cause__ is not None
    forget_frames(outer)
    assert outer.__traceback__ is None
    assert middle.__traceback__ is None
    assert middle.__cause__.__traceback__ is None


def test_a_trailing_slash_gets_a_404_naming_the_path_without_it(client: TestClient) -> None:
    """A walkthrough found POST .../predict/ answered 307 with an empty body (curl without -L
    printed nothing); it is a 404 saying which path was meant, with no redirect."""
    name = client.get("/v1/models").json()["models"][0]["name"]
    r = client.post(f"/v1/models/{name}/predict/", content=b"x", follow_redirects=False)
    assert r.status_code == 404, r.text
    assert f"did you mean /v1/models/{name}/predict?" in r.json()["detail"]
    assert client.get("/v1/models/", follow_redirects=False).status_code == 404
    r = client.get("/v1/nothing/here/", follow_redirects=False)
    assert r.status_code == 404 and "did you mean" not in r.json()["detail"]


@pytest.mark.slow  # 1.7 s: full runs only
def test_refused_v2_bodies_are_not_kept_by_reference_cycles(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """Round 25: /v2 answers its errors itself ({"error": ...}) and did not drop their frames,
    which sat in cycles through the event loop's Futures when requests queued (decodes under
    `wait_for`, bodies parsed on a thread): 100 refused 19 MB binary bodies left a worker
    about 140 MiB larger at rest. A real server, requests at once, the collector off."""
    app = create_app(make_settings(tiny_models_dir, tmp_path, allowed_hosts=["127.0.0.1"]))
    junk = os.urandom(BIG)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(junk) + 4},
                }
            ]
        }
    ).encode()
    binary = head + len(junk).to_bytes(4, "little") + junk
    bad_b64 = json.dumps(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%" * BIG]}]}
    ).encode()

    with serve_in_thread(app, http=HeadGuardedProtocol) as port:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        name = httpx.get(f"{base}/v1/models").json()["models"][0]["name"]

        def send(i: int) -> int:
            length = {"Inference-Header-Content-Length": str(len(head))} if i % 2 else {}
            content = binary if i % 2 else bad_b64
            url = f"{base}/v2/models/{name}/infer"
            return httpx.post(url, content=content, headers=length, timeout=60).status_code

        gc.collect()
        gc.disable()
        try:
            with ThreadPoolExecutor(4) as pool:
                assert set(pool.map(send, range(8))) <= {400, 415}
            time.sleep(0.3)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            held = [f for f in _frames_holding_big_values(gc.garbage) if "/app/" in f]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert held == []


def test_not_ready_is_logged_as_information_other_5xx_as_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Round 29: every 503 `not-ready` of an ordinary start-up (clients polling a model while
    it loads) was an ERROR line, nine in one start; other 5xx stay errors."""
    from fastapi import FastAPI

    from app.api.problems import install_error_handlers
    from app.errors import NotReady, StorageUnavailable

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/loading")
    def loading() -> None:
        raise NotReady("Model 'x' is still loading; retry in a moment.", retry_after_s=1)

    @app.get("/storage")
    def storage() -> None:
        raise StorageUnavailable("The data folder cannot be read.")

    with TestClient(app) as client, caplog.at_level("INFO", logger="app.api.problems"):
        assert client.get("/loading").status_code == 503
        assert client.get("/storage").status_code == 503
    levels = {r.getMessage().split()[1]: r.levelname for r in caplog.records}
    assert levels == {"/loading:": "INFO", "/storage:": "ERROR"}
