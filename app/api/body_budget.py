"""A per-process budget for request bodies being received.

Each body is capped (IMGCLASS_MAX_REQUEST_BYTES) and must arrive within
IMGCLASS_BODY_TIMEOUT_S, but without a budget nothing bounded how many arrive at once: a
client with a hundred slow 32 MB uploads held 3 GB of one process. The budget counts the bytes
of bodies received and not yet handed on, as they arrive, and refuses a body whose next chunk
does not fit with 503 + Retry-After. It counts what arrived, not what a Content-Length
declares: reserving declared lengths let 14 connections trickling a byte a second (each
declaring 19 MB) hold the whole budget and refuse every other upload. Bodies already read are
bounded further on by the model queues, the catalog embed gate and the /v2 parse gate
(app.api.heavy_bodies). Touched only on the event loop: no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, TypeVar

from starlette.concurrency import run_in_threadpool

from app.errors import Overloaded

T = TypeVar("T")

RETRY_AFTER_S: Final = 1


class BodyBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes  # 0: unbounded
        self.in_transit = 0

    def reserve(self, n: int) -> None:
        if self.limit and self.in_transit + n > self.limit:
            raise Overloaded(
                f"This server process is receiving {self.in_transit:,} bytes of request bodies "
                f"(limit {self.limit:,}, IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT); retry in "
                f"{RETRY_AFTER_S} s.",
                retry_after_s=RETRY_AFTER_S,
            )
        self.in_transit += n

    def release(self, n: int) -> None:
        self.in_transit -= n


async def on_thread(work: Callable[[], T], then: Callable[[], None]) -> T:
    """`work()` on a worker thread; `then()` once that thread has finished, even when the
    request awaiting it is cancelled first: a thread cannot be stopped, so what it holds (its
    bytes in the budget, its turn) is held until it ends."""
    job = asyncio.ensure_future(run_in_threadpool(work))
    job.add_done_callback(lambda _: then())
    return await asyncio.shield(job)
