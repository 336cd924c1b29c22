"""A bounded door for catalog work that embeds images (item adds, search by image).

Those routes run their forward passes in the thread pool, not through a model's queue
(app.scheduler), so without this a burst of them waited in the thread pool's queue with no
bound and no deadline. The gate admits at most `limit` such requests at once per server
process (the model queue's limit plus its pipelines) and answers the next one 503 +
Retry-After, after the same pause as a predict refusal (overload_pause_ms), so clients that
retry at once cannot keep a core busy being refused.

A request is refused before its body is read when the gate is already full (`refuse_if_full`),
but takes its slot only once the body is in (`slot`): a slow upload holds a connection, not a
slot. Taken before the body, 13 slow uploads per process made every item add and image search
answer 503 for up to the body timeout. Bodies in flight are bounded as predict's are: each by
its byte cap and IMGCLASS_BODY_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import Request

from app.batching import Schedulers
from app.errors import Overloaded

RETRY_AFTER_S = 1


class EmbedGate:
    def __init__(self, limit: int, pause_s: float = 0.0, unpack_limit: int = 1) -> None:
        self.limit = max(1, limit)
        self.pause_s = pause_s
        self.active = 0  # touched only on the event loop
        # Zip uploads unpack to up to 200x their size: at most this many unpack at once, the
        # others wait their turn holding their gate slot (so the gate bounds the waiting).
        self.unpack_limit = max(1, unpack_limit)
        self._unpack: asyncio.Semaphore | None = None

    @classmethod
    def for_schedulers(cls, schedulers: Schedulers, pause_ms: float) -> EmbedGate:
        config = schedulers.config
        return cls(config.queue_limit + config.pipelines, pause_ms / 1e3, config.pipelines)

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
            if self.pause_s > 0:
                await asyncio.sleep(self.pause_s)
            raise Overloaded(
                f"The catalog is busy: {self.active} image requests are being embedded "
                f"(limit {self.limit}); retry in {RETRY_AFTER_S} s.",
                retry_after_s=RETRY_AFTER_S,
            )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.refuse_if_full()
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


def embed_gate(request: Request) -> EmbedGate:
    """The app's gate (made on first use from its schedulers' limits)."""
    state = request.app.state
    gate: EmbedGate | None = getattr(state, "embed_gate", None)
    if gate is None:
        gate = EmbedGate.for_schedulers(state.schedulers, state.settings.overload_pause_ms)
        state.embed_gate = gate
    return gate


def embed_slot(request: Request) -> AbstractAsyncContextManager[None]:
    """A slot of the app's gate: take it once the body is read (503 if none is free)."""
    return embed_gate(request).slot()
