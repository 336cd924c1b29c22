"""A bounded door for catalog work that embeds images (item adds, search by image).

Those routes run their forward passes in the thread pool, not through a model's queue
(app.scheduler), so without this a burst of them waited in the thread pool's queue with no
bound and no deadline. The gate admits at most `limit` such requests at once per server
process (the model queue's limit plus its pipelines) and answers the next one 503 +
Retry-After at once, before its body is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import Request

from app.batching import Schedulers
from app.errors import Overloaded

RETRY_AFTER_S = 1


class EmbedGate:
    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0  # touched only on the event loop

    @classmethod
    def for_schedulers(cls, schedulers: Schedulers) -> EmbedGate:
        return cls(schedulers.config.queue_limit + schedulers.config.pipelines)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.limit:
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
        gate = EmbedGate.for_schedulers(state.schedulers)
        state.embed_gate = gate
    return gate.slot()
