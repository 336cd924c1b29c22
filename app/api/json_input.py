"""Read a JSON image body ({"images": [{"b64"} | {"url"}]}) within the request's limits."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.api.forms import read_body
from app.json_images import JsonImage, load_images, parse_images
from app.settings import Settings


async def read_json_images(request: Request, settings: Settings) -> list[JsonImage]:
    """The body is capped at max_request_bytes before parsing; URL fetches (blocking, with one
    deadline) run in a worker thread."""
    raw = await read_body(request, settings.max_request_bytes)
    entries = await run_in_threadpool(parse_images, raw, settings)  # up to 32 MB of JSON
    return await run_in_threadpool(load_images, entries, settings)
