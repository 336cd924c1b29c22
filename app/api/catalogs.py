"""Catalog endpoints: named image collections searched by a model's embeddings."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from app.api.deps import ReadAuth, SettingsDep, WriteAuth
from app.api.uploads import read_uploads
from app.catalog.schemas import (
    MAX_K,
    CatalogCreate,
    CatalogInfo,
    CatalogList,
    Item,
    ItemList,
    ItemsCreated,
    ReindexResult,
    SearchRequest,
    SearchResponse,
    SearchTimings,
    catalog_shape,
    item_view,
    neighbor_view,
)
from app.catalog.service import CatalogService, ItemSpec, SearchOutcome
from app.catalog.types import MAX_METADATA_BYTES, CatalogRecord
from app.errors import BadRequest, InvalidRequest, NotFound, PayloadTooLarge, ServiceError
from app.imaging import ACCEPTED_TEXT
from app.settings import Settings

DEFAULT_K = 10
# A text part (an `items` array for a full batch) may hold this much.
MAX_FORM_PART = 1024 * 1024


def get_catalogs(request: Request) -> CatalogService:
    service: CatalogService = request.app.state.catalogs
    return service


CatalogsDep = Annotated[CatalogService, Depends(get_catalogs)]

router = APIRouter(prefix="/v1/catalogs", tags=["catalogs"], dependencies=[ReadAuth])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key"},
    404: {"description": "unknown catalog, item or model"},
    409: {"description": "the served model is not the build the catalog was made with"},
    422: {"description": "invalid parameters"},
    503: {"description": "model still loading or vector store unavailable"},
}

_ITEMS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "multipart/form-data with one or more `file` parts, each one item, and optionally per "
            "item: `id` (client-chosen, unique in the catalog; else generated), `label`, and "
            "`metadata` (a JSON object as a string). Give each field once per file (in order) - "
            "`label`/`metadata` given once apply to every file - or instead one `items` field: a "
            "JSON array of {id, label, metadata} objects, one per file. A single image may also "
            f"be sent as the raw body with ?id=&label=&metadata=. Accepted: {ACCEPTED_TEXT}."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "id": {"type": "array", "items": {"type": "string"}},
                        "label": {"type": "array", "items": {"type": "string"}},
                        "metadata": {"type": "array", "items": {"type": "string"}},
                        "items": {"type": "string", "description": "JSON array, one per file"},
                    },
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_SEARCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": (
            "The query: an image (multipart `file` part or the raw body), or JSON "
            '{"item_id": ...} / {"vector": [...]} with optional "k" and "label", or no body and '
            "?item_id=. The query item itself is never returned."
        ),
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def catalog_view(service: CatalogService, rec: CatalogRecord) -> CatalogInfo:
    try:
        served: str | None = service.registry.get(
            rec.model.name
        ).model.bundle.metadata.artifact.sha256
    except ServiceError:
        served = None
    return catalog_shape(rec, served)


def search_view(
    out: SearchOutcome, k: int, label: str | None, item_id: str | None, t0: float
) -> SearchResponse:
    name = out.catalog.name
    return SearchResponse(
        catalog=name,
        model=out.catalog.model.name,
        k=k,
        label=label,
        query_item_id=item_id,
        neighbors=[neighbor_view(name, h) for h in out.hits[0]],
        timings=SearchTimings(
            embed_ms=round(out.embed_ms, 3),
            search_ms=round(out.search_ms, 3),
            total_ms=round((time.perf_counter() - t0) * 1e3, 3),
        ),
    )


# parsing ------------------------------------------------------------------------------------
async def parse_item_form(request: Request, settings: Settings) -> None:
    """Parse a multipart body with room for id/label/metadata per file (read_uploads' field
    limit is sized for predict); Starlette caches the result for read_uploads."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return
    n = settings.max_batch_images
    try:
        await request.form(max_files=n, max_fields=3 * n + 8, max_part_size=MAX_FORM_PART)
    except MultiPartException as exc:
        if "Too many files" in str(exc):
            raise PayloadTooLarge(
                f"Too many images: at most {n} per request.", limit_images=n
            ) from exc
        raise BadRequest(f"The multipart body could not be parsed: {exc}.") from exc
    except ClientDisconnect as exc:
        raise BadRequest("The client disconnected before the body was complete.") from exc


def parse_metadata(text: str | None, where: str = "metadata") -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"{where} is larger than {MAX_METADATA_BYTES:,} bytes.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{where} is not valid JSON: {exc.msg} at position {exc.pos}."
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object, not {type(value).__name__}.")
    return value


def _spec_from_json(obj: Any, i: int) -> ItemSpec:
    where = f"items[{i}]"
    if not isinstance(obj, dict) or set(obj) - {"id", "label", "metadata"}:
        raise InvalidRequest(f"{where} must be an object with only id, label and metadata.")
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidRequest(f"{where}.metadata must be a JSON object.")
    for key in ("id", "label"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise InvalidRequest(f"{where}.{key} must be a string.")
    if meta is not None and len(json.dumps(meta).encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"{where}.metadata is larger than {MAX_METADATA_BYTES:,} bytes.")
    return ItemSpec(id=obj.get("id"), label=obj.get("label"), metadata=meta or {})


def _per_file(values: list[str], n: int, field: str, shareable: bool) -> list[str | None]:
    if not values:
        return [None] * n
    out: list[str | None] = [*values]
    if len(values) == n:
        return out
    if len(values) == 1 and shareable:
        return out * n
    raise InvalidRequest(
        f"{len(values)} '{field}' fields for {n} files: give one per file, in order"
        + (" (or one for all)." if shareable else ".")
    )


async def item_specs(request: Request, n: int, query: dict[str, str | None]) -> list[ItemSpec]:
    """Per-file id/label/metadata from the multipart fields (or query parameters for a raw body)."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return [
            ItemSpec(
                id=query["id"], label=query["label"], metadata=parse_metadata(query["metadata"])
            )
        ]
    form = await request.form()  # parsed (and cached) by read_uploads
    texts: dict[str, list[str]] = {}
    for key in ("id", "label", "metadata", "items"):
        vals = form.getlist(key)
        if any(isinstance(v, UploadFile) for v in vals):
            raise InvalidRequest(f"The '{key}' part must be a text field, not a file.")
        texts[key] = [str(v) for v in vals]
    if texts["items"]:
        if any(texts[k] for k in ("id", "label", "metadata")) or len(texts["items"]) > 1:
            raise InvalidRequest("Give either one 'items' JSON array or id/label/metadata fields.")
        try:
            arr = json.loads(texts["items"][0])
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"'items' is not valid JSON: {exc.msg}.") from exc
        if not isinstance(arr, list) or len(arr) != n:
            raise InvalidRequest(f"'items' must be a JSON array with one object per file ({n}).")
        return [_spec_from_json(obj, i) for i, obj in enumerate(arr)]
    ids = _per_file(texts["id"], n, "id", shareable=False)
    labels = _per_file(texts["label"], n, "label", shareable=True)
    metas = _per_file(texts["metadata"], n, "metadata", shareable=True)
    return [
        ItemSpec(
            id=ids[i],
            label=labels[i],
            metadata=parse_metadata(metas[i], f"metadata of file {i + 1}" if n > 1 else "metadata"),
        )
        for i in range(n)
    ]


# catalogs -----------------------------------------------------------------------------------
@router.post(
    "", status_code=201, response_model=CatalogInfo, dependencies=[WriteAuth], responses=_ERRORS
)
async def create_catalog(
    body: CatalogCreate, service: CatalogsDep, response: Response
) -> CatalogInfo:
    """Create an empty catalog bound to a served model's embedding space (name, version and
    sha256 of its model.onnx are recorded). 409 if the name is taken."""
    rec = await run_in_threadpool(service.create, body.name, body.model, body.description)
    response.headers["Location"] = f"/v1/catalogs/{quote(rec.name)}"
    return catalog_view(service, rec)


@router.get("", response_model=CatalogList)
async def list_catalogs(service: CatalogsDep) -> CatalogList:
    """Every catalog with its model binding and size."""
    recs = await run_in_threadpool(service.list_catalogs)
    return CatalogList(catalogs=[catalog_view(service, r) for r in recs], store=service.store.kind)


@router.get("/{name}", response_model=CatalogInfo, responses=_ERRORS)
async def get_catalog(name: str, service: CatalogsDep) -> CatalogInfo:
    """One catalog; `stale` says whether it must be reindexed before it can be searched."""
    return catalog_view(service, await run_in_threadpool(service.get, name))


@router.delete("/{name}", status_code=204, dependencies=[WriteAuth], responses=_ERRORS)
async def delete_catalog(name: str, service: CatalogsDep) -> Response:
    """Delete a catalog, its items, and the images no other catalog uses."""
    await run_in_threadpool(service.delete, name)
    return Response(status_code=204)


@router.post(
    "/{name}/reindex", response_model=ReindexResult, dependencies=[WriteAuth], responses=_ERRORS
)
async def reindex_catalog(name: str, service: CatalogsDep) -> ReindexResult:
    """Re-embed every stored image with the model build now served and rebind the catalog to
    it (after a model update). Synchronous: about a second per few thousand small images."""
    t0 = time.perf_counter()
    rec, n = await run_in_threadpool(service.reindex, name)
    return ReindexResult(
        catalog=catalog_view(service, rec), items=n, seconds=round(time.perf_counter() - t0, 3)
    )


# items --------------------------------------------------------------------------------------
@router.post(
    "/{name}/items",
    status_code=201,
    response_model=ItemsCreated,
    dependencies=[WriteAuth],
    openapi_extra=_ITEMS_BODY,
    responses={
        **_ERRORS,
        409: {"description": "duplicate item id, or stale catalog"},
        413: {},
        415: {},
    },
)
async def add_items(
    name: str,
    request: Request,
    service: CatalogsDep,
    settings: SettingsDep,
    id: Annotated[str | None, Query(description="raw-body upload: the item id")] = None,
    label: Annotated[str | None, Query(description="raw-body upload: the label")] = None,
    metadata: Annotated[str | None, Query(description="raw-body upload: JSON object")] = None,
) -> ItemsCreated:
    """Add images to a catalog (embedded with the catalog's model in one forward pass).
    All or nothing; the 201 is sent only once images and items are durably on disk."""
    await run_in_threadpool(service.get, name)  # 404 before reading a large body
    await parse_item_form(request, settings)
    uploads = await read_uploads(request, settings)
    specs = await item_specs(
        request, len(uploads), {"id": id, "label": label, "metadata": metadata}
    )
    records = await run_in_threadpool(service.add, name, [u.data for u in uploads], specs)
    return ItemsCreated(
        catalog=name, ids=[r.id for r in records], items=[item_view(name, r) for r in records]
    )


@router.get("/{name}/items", response_model=ItemList, responses=_ERRORS)
async def list_items(
    name: str,
    service: CatalogsDep,
    after: Annotated[
        str | None, Query(description="cursor: the last id of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    label: Annotated[str | None, Query(description="only items with this label")] = None,
) -> ItemList:
    """Items in id order (generated ids sort by creation time), a page at a time."""
    page = await run_in_threadpool(
        lambda: service.list_items(name, after=after, limit=limit, label=label)
    )
    return ItemList(
        items=[item_view(name, it) for it in page.items],
        total=page.total,
        next_after=page.next_after,
    )


@router.get("/{name}/items/{item_id}", response_model=Item, responses=_ERRORS)
async def get_item(name: str, item_id: str, service: CatalogsDep) -> Item:
    """One item's label, metadata and image description."""
    return item_view(name, await run_in_threadpool(service.get_item, name, item_id))


async def _file(
    name: str, item_id: str, thumbnail: bool, request: Request, service: CatalogService
) -> Response:
    path, ctype, item = await run_in_threadpool(service.item_file, name, item_id, thumbnail)
    etag = f'"{item.image.sha256[:32]}{"-t" if thumbnail else ""}"'
    scope = "private" if service.settings.api_key_for_reads else "public"
    headers = {
        "ETag": etag,
        "Cache-Control": f"{scope}, max-age=86400",
        "X-Content-Type-Options": "nosniff",
    }
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    if not path.is_file():
        raise NotFound(f"The image file of item {item_id!r} is missing from the data folder.")
    return FileResponse(path, media_type=ctype, headers=headers)


@router.get(
    "/{name}/items/{item_id}/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}, 304: {"description": "not modified"}, **_ERRORS},
)
async def get_item_image(
    name: str, item_id: str, request: Request, service: CatalogsDep
) -> Response:
    """The stored original, as uploaded (ETag = content digest)."""
    return await _file(name, item_id, False, request, service)


@router.get(
    "/{name}/items/{item_id}/thumbnail",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}},
        304: {"description": "not modified"},
        **_ERRORS,
    },
)
async def get_item_thumbnail(
    name: str, item_id: str, request: Request, service: CatalogsDep
) -> Response:
    """A JPEG thumbnail, longest side at most `thumbnail_px` (128 by default)."""
    return await _file(name, item_id, True, request, service)


@router.delete(
    "/{name}/items/{item_id}", status_code=204, dependencies=[WriteAuth], responses=_ERRORS
)
async def delete_item(name: str, item_id: str, service: CatalogsDep) -> Response:
    """Remove an item for good (and its image when nothing else uses it)."""
    await run_in_threadpool(service.delete_item, name, item_id)
    return Response(status_code=204)


# search -------------------------------------------------------------------------------------
@router.post(
    "/{name}/search",
    response_model=SearchResponse,
    openapi_extra=_SEARCH_BODY,
    responses={**_ERRORS, 413: {}, 415: {}},
)
async def search(
    name: str,
    request: Request,
    service: CatalogsDep,
    settings: SettingsDep,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="neighbours to return")] = DEFAULT_K,
    label: Annotated[str | None, Query(description="only neighbours with this label")] = None,
    item_id: Annotated[str | None, Query(description="search with a stored item")] = None,
) -> SearchResponse:
    """The k catalog items most similar to the query (cosine of embeddings, best first):
    an uploaded image, a stored item (excluded from its own results) or a raw vector."""
    t0 = time.perf_counter()
    ctype = request.headers.get("content-type", "").lower()
    body = SearchRequest()
    if ctype.startswith("application/json"):
        raw = await request.body()
        if len(raw) > 1 << 20:
            raise InvalidRequest("The JSON body is larger than 1 MiB.")
        try:
            body = SearchRequest.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidRequest(f"Invalid search request: {detail}") from exc
    k = body.k or k
    label = body.label if body.label is not None else label
    item_id = body.item_id if body.item_id is not None else item_id
    if body.vector is not None:
        out = await run_in_threadpool(service.search_vector, name, body.vector, k, label)
    elif item_id is not None:
        out = await run_in_threadpool(service.search_item, name, item_id, k, label)
    elif ctype.startswith("application/json"):
        raise InvalidRequest("Give item_id or vector in the JSON body, or upload an image.")
    else:
        await run_in_threadpool(service.get, name)
        uploads = await read_uploads(request, settings)
        if len(uploads) != 1:
            raise InvalidRequest(f"Search takes one image; {len(uploads)} were sent.")
        out = await run_in_threadpool(service.search_images, name, [uploads[0].data], k, label)
    return search_view(out, k, label, item_id, t0)
