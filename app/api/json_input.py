"""Read a JSON image body ({"images": [{"b64"} | {"url"}]}) within the request's limits."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.api.body_budget import BodyBudget, on_thread
from app.api.forms import read_body
from app.json_images import JsonImage, fetch_bytes_bound, load_images, parse_images
from app.settings import Settings


async def read_json_images(request: Request, settings: Settings) -> list[JsonImage]:
    """The body is capped at max_request_bytes before parsing; URL fetches (blocking, with one
    deadline) run in a worker thread, their most possible bytes charged to the process's body
    budget (app.api.body_budget) meanwhile, as an upload's bytes would be."""
    raw = await read_body(request, settings.max_request_bytes)
    entries = await run_in_threadpool(parse_images, raw, settings)  # up to 32 MB of JSON
    del raw  # the parsed strings are all that is needed now
    bound = fetch_bytes_bound(entries, settings)
    budget: BodyBudget | None = getattr(request.app.state, "body_budget", None)
    if budget is None or bound == 0:
        return await run_in_threadpool(load_images, entries, settings)
    budget.reserve(bound)  # given back when the fetching thread is done
    return await on_thread(lambda: load_images(entries, settings), lambda: budget.release(bound))
