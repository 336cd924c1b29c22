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


def test_a_waiting_body_is_charged_and_refused_at_its_deadline() -> None:
    gate = HeavyBodyGate()
    budget = BodyBudget(1000)
    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(body_budget=budget)))
    entered, release = threading.Event(), threading.Event()

    def first_work() -> str:
        entered.set()
        release.wait(10)
        return "first"

    async def main() -> None:
        first = asyncio.ensure_future(gate.run(request, 600, time.perf_counter() + 30, first_work))
        assert await asyncio.to_thread(entered.wait, 10)
        assert budget.in_transit == 600
        t0 = time.perf_counter()
        waiting = asyncio.ensure_future(gate.run(request, 300, t0 + 0.3, lambda: "second"))
        await asyncio.sleep(0.05)
        assert budget.in_transit == 900  # waiting for its turn: still counted
        with pytest.raises(Overloaded, match="one at a time") as refused:
            await waiting
        assert refused.value.extra["retry_after_s"] >= 1
        assert 0.25 < time.perf_counter() - t0 < 5.0
        assert budget.in_transit == 600
        # No room in the budget: refused at once, before waiting.
        with pytest.raises(Overloaded, match="IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT"):
            await gate.run(request, 500, time.perf_counter() + 30, lambda: "third")
        release.set()
        assert await first == "first"
        assert budget.in_transit == 0
        assert await gate.run(request, 10, time.perf_counter() + 5, lambda: "after") == "after"

    asyncio.run(main())


def test_a_cancelled_request_keeps_its_turn_until_its_parse_ends() -> None:
    # The worker thread cannot be stopped: while it parses, the next heavy body must still
    # wait, and its bytes stay counted.
    gate = HeavyBodyGate()
    budget = BodyBudget(1000)
    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(body_budget=budget)))
    entered, release = threading.Event(), threading.Event()

    def work() -> str:
        entered.set()
        release.wait(10)
        return "parsed"

    async def main() -> None:
        task = asyncio.ensure_future(gate.run(request, 100, time.perf_counter() + 30, work))
        assert await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert budget.in_transit == 100
        with pytest.raises(Overloaded, match="one at a time"):
            await gate.run(request, 10, time.perf_counter() + 0.2, lambda: "next")
        release.set()
        for _ in range(250):
            if budget.in_transit == 0:
                break
            await asyncio.sleep(0.02)
        assert budget.in_transit == 0
        assert await gate.run(request, 10, time.perf_counter() + 5, lambda: "next") == "next"

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
