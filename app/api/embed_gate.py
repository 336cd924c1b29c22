"""A bounded door for catalog work that embeds images (item adds, search by image).

Those routes run their forward passes in the thread pool, not through a model's queue
(app.scheduler), so without this a burst of them waited in the thread pool's queue with no
bound and no deadline. The gate admits at most `limit` such requests at once per server
process (the model queue's limit plus its pipelines) and answers the next one 503 +
Retry-After, after the same pause as a predict refusal (overload_pause_ms), so clients that
retry at once cannot keep a core busy being refused.

A request is refused before its body is read when the gate is already full (`refuse_if_full`),
but takes its slot only once the body is in (`slot`): a slow upload holds a connection, not a
slot. Admitted requests then take turns: at most `turns` (the pipelines) decode and embed at
once per process, the others wait up to `wait_s` (IMGCLASS_REQUEST_DEADLINE_S) and are answered
503 after it. Round 40: 26 previews of a costly picture all ran at once, queued on the decode
slots predict shares, and kept predict answering 503 for 30 s; a client that left its request
still had it decoded (`run_turn` holds the turn until the thread's work is done, so a request
cancelled meanwhile does not let another start beside it). Taken before the body, 13 slow
uploads per process made every item add and image search answer 503 for up to the body
timeout. Bodies in flight are bounded as predict's are: each by
its byte cap and IMGCLASS_BODY_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.batching import Schedulers
from app.errors import Overloaded

RETRY_AFTER_S = 1
T = TypeVar("T")


class EmbedGate:
    def __init__(
        self,
        limit: int,
        pause_s: float = 0.0,
        unpack_limit: int = 1,
        turns: int = 1,
        wait_s: float = 10.0,
    ) -> None:
        self.limit = max(1, limit)
        self.pause_s = pause_s
        self.turns = max(1, turns)
        self.wait_s = wait_s
        self._turns: asyncio.Semaphore | None = None
        self.active = 0  # touched only on the event loop
        # Zip uploads unpack to up to 200x their size: at most this many unpack at once, the
        # others wait their turn holding their gate slot (so the gate bounds the waiting).
        self.unpack_limit = max(1, unpack_limit)
        self._unpack: asyncio.Semaphore | None = None

    @classmethod
    def for_schedulers(
        cls, schedulers: Schedulers, pause_ms: float, wait_s: float = 10.0
    ) -> EmbedGate:
        config = schedulers.config
        n = config.pipelines
        return cls(config.queue_limit + n, pause_ms / 1e3, n, turns=n, wait_s=wait_s)

    @asynccontextmanager
    async def unpack_turn(self) -> AsyncIterator[None]:
        """Wait until fewer than `unpack_limit` zip uploads of this process are unpacking."""
        if self._unpack is None:
            self._unpack = asyncio.Semaphore(self.unpack_limit)
        async with self._unpack:
            yield

    async def refuse_if_full(self) -> None:
        """503 (after the pause) when every slot is taken; nothing is held otherwise."""
        if self.active >= self.limit:
            busy = self.active  # as it was when refused, not after the pause
            if self.pause_s > 0:
                await asyncio.sleep(self.pause_s)
            raise Overloaded(
                f"The server is busy: {busy} image requests (catalog adds and searches, "
                f"previews) are being decoded here (limit {self.limit}); retry in "
                f"{RETRY_AFTER_S} s.",
                retry_after_s=RETRY_AFTER_S,
            )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A place among the `limit` admitted (no turn: long jobs such as a reindex or a zip
        of a thousand pictures, bounded by their own means)."""
        await self.refuse_if_full()
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    async def run_turn(self, work: Callable[[], T]) -> T:
        """`work()` on a worker thread once admitted and its turn has come (503 if it does not
        come within wait_s). Cancelled meanwhile (the client left): not started if waiting;
        if running, the turn is held until the thread is done."""
        async with self.slot():
            if self._turns is None:
                self._turns = asyncio.Semaphore(self.turns)
            turns = self._turns
            try:
                await asyncio.wait_for(turns.acquire(), self.wait_s)
            except TimeoutError:
                raise Overloaded(
                    f"Too many image requests are being decoded here: this one waited "
                    f"{self.wait_s:g} s for its turn; retry in {RETRY_AFTER_S} s.",
                    retry_after_s=RETRY_AFTER_S,
                ) from None
            task = asyncio.ensure_future(run_in_threadpool(work))
            # the thread cannot be stopped: its turn is given back when it ends, cancelled or not
            task.add_done_callback(lambda _: turns.release())
            return await asyncio.shield(task)


def embed_gate(request: Request) -> EmbedGate:
    """The app's gate (made on first use from its schedulers' limits)."""
    state = request.app.state
    gate: EmbedGate | None = getattr(state, "embed_gate", None)
    if gate is None:
        settings = state.settings
        gate = EmbedGate.for_schedulers(
            state.schedulers, settings.overload_pause_ms, settings.request_deadline_s
        )
        state.embed_gate = gate
    return gate


def embed_slot(request: Request) -> AbstractAsyncContextManager[None]:
    """A slot of the app's gate without a turn (a reindex, a zip): take it once the body is
    read (503 if none is free)."""
    return embed_gate(request).slot()


async def embed_turn(request: Request, work: Callable[[], T]) -> T:
    """`work()` (decoding, embedding) in a turn of the app's gate (EmbedGate.run_turn): call
    once the body is read."""
    return await embed_gate(request).run_turn(work)
