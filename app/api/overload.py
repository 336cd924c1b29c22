"""Load shedding at the door: a POST to /v1/models/{name}/predict or /v2/models/{name}/infer
whose model queue is full is answered 503 + Retry-After (problem+json; {"error"} under /v2)
before routing, dependencies or body parsing.

Pure ASGI and cheap on purpose (~0.07 ms of server CPU per refusal, plus the access log line,
against ~1 ms through the route). A client address's first refusal is sent at once. An address
refused again within its Retry-After (a client that did not wait) is paced: the refusal is
sent after the time the queue needs to drain (the requests waiting x the model's recent
per-request time / its workers), at least `pause_ms` (overload_pause_ms, default 100) and at most `max_pause_ms`
(overload_pause_max_ms, default 250), so a refused client hears back no later than an
accepted one would have started, and never seconds later. A client that ignores Retry-After
and retries at once (most load generators do) would otherwise keep the event loop and itself
runnable non-stop, taking CPU from the pipelines (measured: ~2,000 refusals/s from 24 such
clients unpaced, ~240/s at 50 ms; with 12 MP bodies every refusal also re-uploads the image).
Measured at 32 clients with every refusal sent at once: accepted throughput fell to
0.18-0.78x of the 8-client figure (docs/performance.md). `pause_ms=0` refuses at once always.
By address, not by connection (round 29): a refusal sent while its upload is still arriving
closes the connection (app/http_guard.py), so a client retrying a 12 MP upload came back on a
new connection every time and was never paced (32 clients: 0.24-0.34x the 8-client
throughput, thousands of refusals a second, the kernel out of TCP memory). Clients behind one
address (a NAT, a proxy) share the memory: a second one refused within the first's Retry-After
waits the pause too, at most `max_pause_ms`.
The route checks again (`ModelScheduler.admit`/`submit`), so this is an optimisation, not
the rule.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.predict import PATH_PATTERN
from app.api.problems import is_oip_path
from app.batching import Schedulers
from app.errors import PROBLEM_JSON
from app.scheduler import ModelScheduler

# /v2 infer of a model's newest version (an older version's queue is checked by the route).
V2_INFER = re.compile(r"/v2/models/([^/]+)/infer")
# Client addresses remembered with their last refusal (bounded: the oldest half is forgotten).
MAX_REMEMBERED = 4096


class OverloadShedder:
    def __init__(
        self,
        app: ASGIApp,
        *,
        schedulers: Schedulers,
        pause_ms: float = 0.0,
        max_pause_ms: float = 250.0,
    ) -> None:
        self.app = app
        self.schedulers = schedulers
        self.pause_s = pause_ms / 1e3
        self.max_pause_s = max(pause_ms, max_pause_ms) / 1e3
        self._refused: dict[object, float] = {}  # client address (host) -> last refusal

    def again(self, scope: Scope, within_s: float) -> bool:
        """Record a refusal for this request's client address; True if that address was
        already refused within `within_s` (its Retry-After: it did not wait), on this
        connection or another. A request without a client address counts as a repeat (paced,
        the safe side)."""
        client = scope.get("client")
        if client is None:
            return True
        key = client[0]
        now = time.monotonic()
        last = self._refused.pop(key, None)
        self._refused[key] = now  # re-inserted: the dict stays in order of last refusal
        if len(self._refused) > MAX_REMEMBERED:
            for old in list(self._refused)[: MAX_REMEMBERED // 2]:
                del self._refused[old]
        return last is not None and now - last < within_s

    def pause_for(self, sched: ModelScheduler) -> float:
        """Seconds to hold a refusal: the queue's drain time within [pause_ms, max_pause_ms]."""
        if self.pause_s <= 0:
            return 0.0
        return min(self.max_pause_s, max(self.pause_s, sched.drain_s()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            match = PATH_PATTERN.fullmatch(path) or V2_INFER.fullmatch(path)
            sched = self.schedulers.peek(match.group(1)) if match else None
            if match is not None and sched is not None and sched.full:
                error = sched.overloaded()
                if is_oip_path(path):  # the Open Inference Protocol's error shape, as guards
                    doc, media_type = {"error": error.detail}, "application/json"
                else:
                    doc, media_type = error.to_problem(path), PROBLEM_JSON
                body = json.dumps(doc).encode()
                pause = self.pause_for(sched)
                if pause > 0 and self.again(scope, float(sched.retry_after_s)):
                    await asyncio.sleep(pause)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", media_type.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(sched.retry_after_s).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
