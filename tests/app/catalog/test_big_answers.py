"""Answers that list many stored items (app.api.big_answers): built one at a time on a worker
thread and charged to the body budget until sent, on the real tiny bundle."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.big_answers import LARGE_ITEMS

ClientFactory = Callable[..., TestClient]
N = LARGE_ITEMS + 44  # 300 items: a full listing is a big answer
META = {"note": "m" * 4000}  # 4 KB of metadata each: 1.2 MB for the whole catalog


def png(seed: int) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    return [png(i) for i in range(N + 32)]


def fill(c: TestClient, pngs: list[bytes], meta: dict[str, str] = META, copies: int = 1) -> None:
    assert c.post("/v1/catalogs", json={"name": "big", "model": "tiny"}).status_code == 201
    for start in range(0, N * copies, 20):
        part = range(start, min(start + 20, N * copies))
        files = [("file", (f"{i}.png", pngs[i % N], "image/png")) for i in part]
        form = {"id": [f"i{i:04d}" for i in part], "metadata": [json.dumps(meta)] * len(part)}
        r = c.post("/v1/catalogs/big/items", files=files, data=form)
        assert r.status_code == 201, r.text


def in_transit(c: TestClient) -> int:
    return int(c.app.state.body_budget.in_transit)  # type: ignore[attr-defined]


@pytest.mark.slow  # 2 s: full runs only; the 503 case below stays fast
def test_big_listings_and_neighbour_lists_are_whole_and_give_their_bytes_back(
    make_client: ClientFactory, pngs: list[bytes]
) -> None:
    with make_client(default_catalogs={"tiny": "big"}) as c:
        fill(c, pngs)
        whole = c.get("/v1/catalogs/big/items?limit=1000")
        assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
        body: dict[str, Any] = whole.json()
        assert body["total"] == N and len(body["items"]) == N and body["next_after"] is None
        # the same items, field for field, as small pages built the ordinary way
        paged: list[dict[str, Any]] = []
        after = None
        while True:
            r = c.get(
                "/v1/catalogs/big/items",
                params={"limit": 100, "after": after} if after else {"limit": 100},
            )
            paged += r.json()["items"]
            after = r.json()["next_after"]
            if after is None:
                break
        assert paged == body["items"] and body["items"][0]["metadata"] == META
        head = c.head("/v1/catalogs/big/items?limit=1000")
        assert head.status_code == 200 and head.content == b""
        assert in_transit(c) == 0
        # predict?similar: 32 images x 10 neighbours = 320 listed items
        files = [("file", (f"q{i}.png", pngs[N + i], "image/png")) for i in range(32)]
        r = c.post("/v1/models/tiny/predict?similar=10", files=files)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == 32 and all(len(x["similar"]) == 10 for x in results)
        assert results[0]["similar"][0]["metadata"] == META
        one = c.post("/v1/models/tiny/predict?similar=10", content=pngs[N])
        assert one.json()["results"][0]["similar"] == results[0]["similar"]
        assert in_transit(c) == 0


def test_an_answer_that_does_not_fit_the_budget_is_a_503(
    make_client: ClientFactory, pngs: list[bytes]
) -> None:
    """A 1.2 MB listing against a 1 MiB budget for bytes held in flight: 503 + Retry-After,
    and nothing stays charged; a page that fits is answered."""
    mib = 1 << 20
    limits = {"max_body_bytes_in_flight": mib, "max_request_bytes": mib, "teach_max_zip_bytes": mib}
    with make_client(**limits) as c:
        fill(c, pngs)
        r = c.get("/v1/catalogs/big/items?limit=1000")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT" in r.json()["detail"]
        assert in_transit(c) == 0
        assert c.get("/v1/catalogs/big/items?limit=200").status_code == 200


@pytest.mark.slow
def test_a_big_answer_waits_for_its_turn_until_the_deadline(
    make_client: ClientFactory, pngs: list[bytes]
) -> None:
    with make_client(request_deadline_s=0.2) as c:
        fill(c, pngs)
        turn = c.app.state.answers._turn  # type: ignore[attr-defined]
        assert c.portal is not None
        c.portal.call(turn.acquire)  # another big answer is being built
        try:
            r = c.get("/v1/catalogs/big/items?limit=1000")
            assert r.status_code == 503 and "one at a time" in r.json()["detail"]
            # small answers do not wait for the turn
            assert c.get("/v1/catalogs/big/items?limit=100").status_code == 200
        finally:
            c.portal.call(turn.release)
        assert c.get("/v1/catalogs/big/items?limit=1000").status_code == 200
        assert in_transit(c) == 0


@pytest.mark.slow  # 900 items of 16 KB (about 15 s here)
def test_an_answer_stays_charged_while_its_client_does_not_read(
    tiny_models_dir: Path, tmp_path: Path, pngs: list[bytes]
) -> None:
    """Round 15: the whole answer went into the connection's buffer at once and its charge
    was given back, so 100 clients that did not read held 2.9 GB against a 128 MiB budget.
    Sent in pieces, the answer stays charged until the client has taken it."""
    import socket
    import time

    import httpx

    from app.main import create_app
    from tests.conftest import make_settings
    from tests.live_server import serve_in_thread

    app = create_app(make_settings(tiny_models_dir, tmp_path))
    with serve_in_thread(app) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            # 900 items of 16 KB: a 15 MB answer, more than the kernel's socket buffers take
            fill(c, pngs, {"note": "m" * 16000}, copies=3)  # type: ignore[arg-type]
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /v1/catalogs/big/items?limit=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            time.sleep(1.0)  # not reading: most of the answer cannot leave the server
            assert app.state.body_budget.in_transit > 10_000_000
            s.settimeout(10)
            got = b""
            while b'"next_after":null}' not in got:
                piece = s.recv(1 << 16)
                assert piece, "closed before the whole answer came"
                got += piece
        time.sleep(0.2)
        assert app.state.body_budget.in_transit == 0
        assert got.count(b'"note"') == 3 * N
