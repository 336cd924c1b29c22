"""Answers that list many stored items are built one at a time per process, and held in the
body budget until they are sent.

An item carries up to 16 KB of client metadata, so `predict?similar=100` on a batch of 32
images lists 3,200 items: a 52 MB answer, which took about 170 MB of one process while it was
built (the records read from the store, then the JSON text, then its bytes; the text on the
event loop), and eight such requests at once took +690 MB. An answer that may list more than
LARGE_ITEMS items is now read and built on a worker thread once no other such answer is being
built, by the request deadline
(IMGCLASS_REQUEST_DEADLINE_S, else 503 + Retry-After), and its bytes are charged to the
process's body budget (app.api.body_budget) until the last of them has gone into the socket
(HeldResponse sends it in pieces, each after the last drained): big answers held for clients
that read them slowly, bodies in transit and bodies waiting for their turn together stay under
IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT (503 + Retry-After when an answer does not fit).
Smaller answers are built where they are, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.body_budget import BodyBudget, on_thread
from app.errors import Overloaded
from app.settings import Settings

LARGE_ITEMS: Final = 256
RETRY_AFTER_S: Final = 1
JSON: Final = "application/json"
CHUNK: Final = 1 << 20  # a big answer is sent in pieces this size, each after the last drained


class HeldResponse(Response):
    """A built answer whose bytes stay charged to the body budget until it is sent (or the
    client goes away). It goes out in CHUNK pieces, each waiting for the connection's write
    buffer to drain: written whole, the server's send returned at once and the budget was
    given back while the answer sat in the buffer of a client that did not read (round 15:
    100 such clients held 2.9 GB of one worker against a 128 MiB budget, until the 60 s
    stall guard dropped them)."""

    def __init__(self, body: bytes, budget: BodyBudget) -> None:
        super().__init__(body, media_type=JSON)
        self._budget, self._held = budget, len(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            view = memoryview(self.body)
            for start in range(0, max(len(view), 1), CHUNK):
                piece = bytes(view[start : start + CHUNK])
                more = start + CHUNK < len(view)
                await send({"type": "http.response.body", "body": piece, "more_body": more})
        finally:
            self._budget.release(self._held)
            self._held = 0


class AnswerGate:
    """One big answer built at a time in this process (touched only on its event loop)."""

    def __init__(self) -> None:
        self._turn = asyncio.Lock()

    async def respond(
        self, request: Request, items: int, build: Callable[[], bytes], large: bool | None = None
    ) -> Response:
        """The JSON answer `build()` makes on a worker thread (reading the stored items and
        writing them out), listing at most `items` stored items; `large`: whether it is a big
        answer whatever `items` says (records that are each large, such as finished jobs)."""
        if not (items > LARGE_ITEMS if large is None else large):
            return Response(await run_in_threadpool(build), media_type=JSON)
        settings: Settings = request.app.state.settings
        try:
            async with asyncio.timeout(settings.request_deadline_s):
                await self._turn.acquire()
        except TimeoutError:
            raise _busy(
                f"Answers listing more than {LARGE_ITEMS} stored items are built one at a time "
                "per server process, and this one's turn did not come within the request "
                "deadline (IMGCLASS_REQUEST_DEADLINE_S)"
            ) from None
        # The turn is given back when the thread is done, even if the request is cancelled
        # first: a client gone mid-build does not let the next build start beside it.
        body = await on_thread(build, self._turn.release)
        budget: BodyBudget | None = getattr(request.app.state, "body_budget", None)
        if budget is None:
            return Response(body, media_type=JSON)
        try:
            budget.reserve(len(body))
        except Overloaded:
            raise _busy(
                f"This {len(body):,}-byte answer does not fit beside the request and answer "
                "bodies this server process holds now (IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT)"
            ) from None
        return HeldResponse(body, budget)


def _busy(why: str) -> Overloaded:
    return Overloaded(
        f"{why}; retry in {RETRY_AFTER_S} s, or ask for fewer items (fewer images, a smaller "
        "similar= or limit=).",
        retry_after_s=RETRY_AFTER_S,
    )
