"""Catalog search: by uploaded image, stored item or raw vector."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app.api.catalogs.openapi import ERRORS, SEARCH_BODY
from app.api.catalogs.shaping import search_view
from app.api.deps import CatalogsDep, ReadAuth, SettingsDep
from app.api.disconnect import unless_gone
from app.api.embed_gate import embed_gate, embed_turn
from app.api.forms import is_json
from app.api.json_bodies import read_model
from app.api.query_names import DIGITS
from app.api.uploads import image_limits, read_uploads
from app.errors import InvalidRequest
from app.schemas import MAX_K, SearchRequest, SearchResponse

DEFAULT_K = 10

router = APIRouter(prefix="/v1/catalogs", tags=["catalogs"], dependencies=[ReadAuth])


@router.post(
    "/{name}/search",
    response_model=SearchResponse,
    openapi_extra=SEARCH_BODY,
    responses={**ERRORS, 413: {"description": "image or JSON body over its limit"}, 415: {}},
)
async def search(
    name: str,
    request: Request,
    service: CatalogsDep,
    settings: SettingsDep,
    k: Annotated[
        int, Query(ge=1, le=MAX_K, description="neighbours to return"), DIGITS
    ] = DEFAULT_K,
    label: Annotated[str | None, Query(description="only neighbours with this label")] = None,
    item_id: Annotated[str | None, Query(description="search with a stored item")] = None,
) -> SearchResponse:
    """The k catalog items most similar to the query (cosine of embeddings, best first):
    an uploaded image, a stored item (excluded from its own results) or a raw vector."""
    t0 = time.perf_counter()
    body = SearchRequest()
    if is_json(request):
        body = await read_model(request, SearchRequest, settings.max_json_bytes, "search request")
    given = request.query_params
    # A query parameter and a body key that disagree: the body won in silence (round 44).
    both: tuple[tuple[str, object, object], ...] = (
        ("k", body.k, k),
        ("label", body.label, label),
        ("item_id", body.item_id, item_id),
    )
    for key, in_body, in_query in both:
        if in_body is not None and key in given and in_body != in_query:
            raise InvalidRequest(
                f"{key} is given twice, {in_query!r} in the query and {in_body!r} in the JSON "
                "body; give it once."
            )
    k = body.k or k
    label = body.label if body.label is not None else label
    item_id = body.item_id if body.item_id is not None else item_id
    if body.vector is not None and item_id is not None:
        # One query per search: the vector won, and the reply named the item as the query.
        raise InvalidRequest("Give either item_id or vector, not both.")
    if body.vector is not None:
        out = await run_in_threadpool(service.search_vector, name, body.vector, k, label)
    elif item_id is not None:
        if not is_json(request) and _has_body(request):
            # An image body with ?item_id=: the item won and the image was ignored.
            raise InvalidRequest("Give either an image or item_id, not both.")
        out = await run_in_threadpool(service.search_item, name, item_id, k, label)
    elif is_json(request):
        raise InvalidRequest("Give item_id or vector in the JSON body, or upload an image.")
    else:
        await run_in_threadpool(service.get, name)
        await embed_gate(request).refuse_if_full()  # 503 before the body when full
        limits = image_limits(settings, files=1)
        uploads = await read_uploads(request, settings, limits=limits)
        if len(uploads) != 1:
            raise InvalidRequest(f"Search takes one image; {len(uploads)} were sent.")
        data = uploads[0].data
        # a turn once the body is in; a client that leaves while it waits is not decoded for
        out = await unless_gone(
            request, embed_turn(request, lambda: service.search_images(name, [data], k, label))
        )
    return search_view(out, k, label, item_id, t0)


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "").strip()
    return "transfer-encoding" in request.headers or (length not in ("", "0"))
