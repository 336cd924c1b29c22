"""Large and compressed /v2 bodies are parsed one at a time per process; one waiting for its
turn stays charged to the body budget and is refused (503) at its deadline. The gate on its
own, then a real server answering gzip-compressed JSON tensors sent at once."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from app.api.body_budget import BodyBudget
from app.api.heavy_bodies import HeavyBodyGate
from app.errors import Overloaded
from tests.conftest import ROOT
from tests.live_server import live_server

pytestmark = pytest.mark.slow  # many large bodies (round 29: the fast subset in 2 min)


class Held:
    """A gate, a body budget of 1,000 bytes behind a stand-in request, and parse work that
    holds its worker thread until released."""

    def __init__(self) -> None:
        self.gate = HeavyBodyGate()
        self.budget = BodyBudget(1000)
        state = SimpleNamespace(body_budget=self.budget)
        self.request: Any = SimpleNamespace(app=SimpleNamespace(state=state))
        self.entered, self.release = threading.Event(), threading.Event()

    def work(self) -> str:
        self.entered.set()
        self.release.wait(10)
        return "parsed"

    async def start(self, size: int) -> asyncio.Future[str]:
        """A parse of `size` bytes, once its worker thread is running."""
        job = asyncio.ensure_future(self.run(size, 30, self.work))
        assert await asyncio.to_thread(self.entered.wait, 10)
        return job

    def run(self, size: int, within_s: float, work: Any) -> Any:
        return self.gate.run(self.request, size, time.perf_counter() + within_s, work)


def test_a_waiting_body_is_charged_and_refused_at_its_deadline() -> None:
    h = Held()

    async def main() -> None:
        first = await h.start(600)
        assert h.budget.in_transit == 600
        t0 = time.perf_counter()
        waiting = asyncio.ensure_future(h.run(300, 0.3, lambda: "second"))
        await asyncio.sleep(0.05)
        assert h.budget.in_transit == 900  # waiting for its turn: still counted
        with pytest.raises(Overloaded, match="one at a time") as refused:
            await waiting
        assert refused.value.extra["retry_after_s"] >= 1
        assert 0.25 < time.perf_counter() - t0 < 5.0
        assert h.budget.in_transit == 600
        # No room in the budget: refused at once, before waiting.
        with pytest.raises(Overloaded, match="IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT"):
            await h.run(500, 30, lambda: "third")
        h.release.set()
        assert await first == "parsed"
        assert h.budget.in_transit == 0
        assert await h.run(10, 5, lambda: "after") == "after"

    asyncio.run(main())


def test_a_cancelled_request_keeps_its_turn_until_its_parse_ends() -> None:
    # The worker thread cannot be stopped: while it parses, the next heavy body must still
    # wait, and its bytes stay counted.
    h = Held()

    async def main() -> None:
        task = await h.start(100)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert h.budget.in_transit == 100
        with pytest.raises(Overloaded, match="one at a time"):
            await h.run(10, 0.2, lambda: "next")
        h.release.set()
        for _ in range(250):
            if h.budget.in_transit == 0:
                break
            await asyncio.sleep(0.02)
        assert h.budget.in_transit == 0
        assert await h.run(10, 5, lambda: "next") == "next"

    asyncio.run(main())


def test_compressed_json_tensors_sent_at_once_are_all_answered(tmp_path: Path) -> None:
    # 4 KB on the wire, 1.2 MB of JSON text once inflated: each one parsed in its turn.
    tensor = [[[[0.5] * 3] * 224] * 224]
    doc = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 224, 224, 3]}]}
    doc["inputs"][0]["data"] = tensor
    body = gzip.compress(json.dumps(doc).encode())
    assert len(body) < 64 * 1024
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["imagenet"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
    with live_server(tmp_path, env, ready_path="/v2/health/ready") as s:
        url = f"{s.base}/v2/models/imagenet/infer"
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}

        def post(_: int) -> httpx.Response:
            return httpx.post(url, content=body, headers=headers, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(post, range(6)))
    for r in answers:
        # 200, or 503 + Retry-After when the queue or a turn could not be had in time
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert r.headers["retry-after"] and "error" in r.json()
    assert any(r.status_code == 200 for r in answers)
    probs = next(r for r in answers if r.status_code == 200).json()["outputs"][0]
    assert probs["name"] == "probs" and probs["shape"] == [1, 1000]
