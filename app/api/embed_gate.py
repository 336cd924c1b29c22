"""A bounded door for catalog work that embeds images (item adds, search by image).

Those routes run their forward passes in the thread pool, not through a model's queue
(app.scheduler), so without this a burst of them waited in the thread pool's queue with no
bound and no deadline. The gate admits at most `limit` such requests at once per server
process (the model queue's limit plus its pipelines) and answers the next one 503 +
Retry-After before its body is read, after the same pause as a predict refusal
(overload_pause_ms), so clients that retry at once cannot keep a core busy being refused.
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
    def __init__(self, limit: int, pause_s: float = 0.0) -> None:
        self.limit = max(1, limit)
        self.pause_s = pause_s
        self.active = 0  # touched only on the event loop

    @classmethod
    def for_schedulers(cls, schedulers: Schedulers, pause_ms: float) -> EmbedGate:
        return cls(schedulers.config.queue_limit + schedulers.config.pipelines, pause_ms / 1e3)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.limit:
            if self.pause_s > 0:
                await asyncio.sleep(self.pause_s)
            raise Overloaded(
                f"The catalog is busy: {self.active} image requests are being embedded "
                f"(limit {self.limit}); retry in {RETRY_AFTER_S} s.",
                retry_after_s=RETRY_AFTER_S,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


def embed_slot(request: Request) -> AbstractAsyncContextManager[None]:
    """The app's gate (made on first use from its schedulers' limits), entered as a slot."""
    state = request.app.state
    gate: EmbedGate | None = getattr(state, "embed_gate", None)
    if gate is None:
        gate = EmbedGate.for_schedulers(state.schedulers, state.settings.overload_pause_ms)
        state.embed_gate = gate
    return gate.slot()
