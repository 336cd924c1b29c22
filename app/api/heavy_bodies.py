"""Large or compressed /v2 request bodies are inflated and parsed one at a time per process.

An FP32 tensor sent as JSON text grows about tenfold while it is parsed (8 MB of text for 27
images of 224 px: a list of four million Python numbers, then its float32 array), and a
compressed body of a few kilobytes inflates to up to IMGCLASS_MAX_REQUEST_BYTES. Twenty such
requests at once used to take 1.7 GB of one process and 22 s to answer: each parsed on its
own thread, and the bytes-in-flight budget had let the compressed bodies in at their small
size. Here one of them is inflated and parsed at a time; a body waiting for its turn stays
charged to the process's body budget (app.api.body_budget) at its received size, so bodies in
transit and waiting together stay under IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT, and a request
whose turn does not come before its deadline is answered 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, TypeVar

from starlette.requests import Request

from app.api.body_budget import BodyBudget, on_thread
from app.errors import Overloaded

T = TypeVar("T")
RETRY_AFTER_S: Final = 1


class HeavyBodyGate:
    """One heavy parse at a time in this process (touched only on its event loop)."""

    def __init__(self) -> None:
        self._turn = asyncio.Lock()

    async def run(self, request: Request, size: int, deadline: float, work: Callable[[], T]) -> T:
        """`work()` (inflating and parsing a body of `size` bytes) on a worker thread once no
        other heavy body is being parsed, by time.perf_counter() value `deadline`. The turn and
        the budget are given back when the thread is done, even if the request is cancelled
        before then (a client gone mid-parse does not let the next parse start beside it)."""
        budget: BodyBudget | None = getattr(request.app.state, "body_budget", None)
        if budget is not None:
            budget.reserve(size)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                await self._turn.acquire()
        except BaseException as exc:
            if budget is not None:
                budget.release(size)
            if isinstance(exc, TimeoutError):
                raise Overloaded(
                    "Large and compressed inference requests are parsed one at a time per "
                    "server process, and this one's turn did not come within the request "
                    f"deadline (IMGCLASS_REQUEST_DEADLINE_S); retry in {RETRY_AFTER_S} s, or "
                    "send tensors with the binary-data extension (no parsing).",
                    retry_after_s=RETRY_AFTER_S,
                ) from None
            raise

        def done() -> None:
            self._turn.release()
            if budget is not None:
                budget.release(size)

        return await on_thread(work, done)
