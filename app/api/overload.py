"""Load shedding at the door: a POST to /v1/models/{name}/predict whose model queue is full is
answered 503 + Retry-After (problem+json) before routing, dependencies or body parsing.

Pure ASGI and cheap on purpose: clients that retry at once (most load generators ignore
Retry-After) would otherwise spend the CPU the pipelines need on being refused. The route
checks again (`ModelScheduler.admit`/`submit`), so this is an optimisation, not the rule.
"""

from __future__ import annotations

import asyncio
import json
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from app.batching import Schedulers
from app.errors import PROBLEM_JSON

_PREDICT = re.compile(r"^/v1/models/([^/]+)/predict$")


class OverloadShedder:
    def __init__(self, app: ASGIApp, *, schedulers: Schedulers, pause_ms: float = 0.0) -> None:
        self.app = app
        self.schedulers = schedulers
        self.pause_s = pause_ms / 1e3

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PREDICT.match(scope["path"])
            sched = self.schedulers.peek(match.group(1)) if match else None
            if sched is not None and sched.full:
                problem = sched.overloaded().to_problem(scope["path"])
                body = json.dumps(problem).encode()
                if self.pause_s > 0:
                    await asyncio.sleep(self.pause_s)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", PROBLEM_JSON.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(sched.retry_after_s).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
