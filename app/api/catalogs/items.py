"""Catalog item routes: add, list, get, image, thumbnail, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.big_answers import AnswerGate
from app.api.catalogs.openapi import ERRORS, ITEMS_BODY
from app.api.catalogs.parsing import ITEM_FIELDS, form_specs, items_limits, query_spec
from app.api.catalogs.shaping import item_view
from app.api.deps import CatalogsDep, ReadAuth, SettingsDep, WriteAuth
from app.api.embed_gate import embed_gate, embed_turn
from app.api.forms import is_multipart, read_form
from app.api.query_names import DIGITS
from app.api.stored_file import (
    PreconditionFailed,
    StoredFileResponse,
    check_if_match,
    none_match,
    open_stored,
)
from app.api.uploads import read_uploads, uploads_from
from app.catalog.outcomes import BLANK_WARNING, AddOutcome
from app.catalog.service import CatalogService
from app.catalog.types import ItemRecord
from app.errors import InvalidRequest, UnsupportedMediaType, batch_position
from app.imaging import ACCEPTED_FORMATS, ACCEPTED_TEXT
from app.not_image import is_zip
from app.schemas import Item, ItemList, ItemsCreated, ItemWarning, SkippedCopy
from app.settings import Settings
from app.teach.layout import EXAMPLE

SKIP_DUPLICATES_TEXT = (
    "true: an image whose embedding equals (cosine >= 0.99999) an item's with the same label, "
    "in the catalog or earlier in the request, is not added but listed in `duplicates`; makes "
    "re-sending an upload whose answer was lost safe"
)

PART = "the requested byte range (Range; If-Range with this ETag), with Content-Range"

router = APIRouter(prefix="/v1/catalogs", tags=["catalogs"], dependencies=[ReadAuth])


@router.post(
    "/{name}/items",
    status_code=201,
    response_model=ItemsCreated,
    dependencies=[WriteAuth],
    openapi_extra=ITEMS_BODY,
    responses={
        **ERRORS,
        200: {
            "model": ItemsCreated,
            "description": "every image was a copy of an item of its label (skip_duplicates): "
            "nothing was added",
        },
        409: {"description": "duplicate item id, or stale catalog"},
        413: {"description": "too many images, an image or the body over its limit"},
        415: {},
    },
)
async def add_items(
    name: str,
    request: Request,
    response: Response,
    service: CatalogsDep,
    settings: SettingsDep,
    id: Annotated[str | None, Query(description="raw-body upload: the item id")] = None,
    label: Annotated[str | None, Query(description="raw-body upload: the label")] = None,
    metadata: Annotated[str | None, Query(description="raw-body upload: JSON object")] = None,
    skip_duplicates: Annotated[bool, Query(description=SKIP_DUPLICATES_TEXT)] = False,
) -> ItemsCreated:
    """Add images to a catalog (embedded with the catalog's model in one forward pass).
    All or nothing; the 201 is sent only once images and items are durably stored. With
    `skip_duplicates=true` copies are left out and listed (200 when nothing was added)."""
    await run_in_threadpool(service.get, name)  # 404 before reading a large body
    await embed_gate(request).refuse_if_full()  # 503 before the body when the gate is full
    out = await _add(name, request, service, settings, id, label, metadata, skip_duplicates)
    if not out.ids:
        response.status_code = 200  # nothing was created: every image was a copy
    return out


def _refuse_zips(name: str, images: list[bytes], filenames: list[str | None]) -> None:
    """A zip sent here is most likely a zip of class folders meant for items:zip: say so (the
    decode's 415 says only that a zip is not an image)."""
    for i, data in enumerate(images):
        if is_zip(data):
            several = len(images) > 1
            raise UnsupportedMediaType(
                (f"{batch_position(i, filenames[i])}: " if several else "")
                + "This is a zip archive; send zips of class folders to POST "
                f"/v1/catalogs/{name}/items:zip (one folder per class, {EXAMPLE}). This route "
                f"takes images: {ACCEPTED_TEXT}.",
                accepted=list(ACCEPTED_FORMATS),
                **({"image_index": i} if several else {}),
            )


async def _add(
    name: str,
    request: Request,
    service: CatalogService,
    settings: Settings,
    id: str | None,
    label: str | None,
    metadata: str | None,
    skip_duplicates: bool,
) -> ItemsCreated:
    if is_multipart(request):
        given = [k for k, v in (("id", id), ("label", label), ("metadata", metadata)) if v]
        if given:  # silently dropped before: the items were stored without them
            raise InvalidRequest(
                f"The {', '.join(given)} query parameter(s) apply to raw-body uploads; with "
                "multipart, send them as text fields (one per file, or one for all)."
            )
        form = await read_form(request, items_limits(settings))
        uploads = uploads_from(form, fields=ITEM_FIELDS)
        specs = form_specs(form, len(uploads))
    else:
        spec = query_spec({"id": id, "label": label, "metadata": metadata})
        uploads = await read_uploads(request, settings)
        if len(uploads) > 1 and id:  # a JSON body of several images (round 44)
            raise InvalidRequest(
                f"The id query parameter names one item, and the body holds {len(uploads)} "
                "images. Leave id out (each gets an id of its own; label and metadata apply to "
                "all), or send multipart with one id field per file."
            )
        specs = [spec] * len(uploads)
    _refuse_zips(name, [u.data for u in uploads], [u.filename for u in uploads])
    # a turn once the body is in (app.api.embed_gate)
    out = await embed_turn(
        request,
        lambda: service.add_checked(
            name, [u.data for u in uploads], specs, skip_duplicates=skip_duplicates
        ),
    )
    records = out.records
    return ItemsCreated(
        catalog=name,
        ids=[r.id for r in records],
        items=[item_view(name, r) for r in records],
        added=len(records),
        duplicates_skipped=len(out.duplicates),
        duplicates=[
            SkippedCopy(
                index=m.index,
                filename=uploads[m.index].filename,
                label=m.label,
                duplicate_of=m.item_id,
                score=round(m.score, 6),
            )
            for m in out.duplicates
        ],
        warnings=_warnings(out, [u.filename for u in uploads]),
    )


def _warnings(out: AddOutcome, filenames: list[str | None]) -> list[ItemWarning]:
    """A warning per blank picture added (a copy left out is not added: no warning)."""
    copies = {m.index for m in out.duplicates}
    added = dict(
        zip([i for i in range(len(filenames)) if i not in copies], out.records, strict=True)
    )
    return [
        ItemWarning(index=i, filename=filenames[i], id=added[i].id, warning=BLANK_WARNING)
        for i in out.blank
        if i in added
    ]


@router.get("/{name}/items", response_model=ItemList, responses=ERRORS)
async def list_items(
    name: str,
    request: Request,
    service: CatalogsDep,
    after: Annotated[
        str | None, Query(description="cursor: the last id of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000), DIGITS] = 50,
    label: Annotated[str | None, Query(description="only items with this label")] = None,
) -> Response:
    """Items in id order (generated ids sort by creation time), a page at a time."""

    def build() -> bytes:
        page = service.list_items(name, after=after, limit=limit, label=label)
        items = [item_view(name, it) for it in page.items]
        return (
            ItemList(items=items, total=page.total, next_after=page.next_after)
            .model_dump_json()
            .encode()
        )

    answers: AnswerGate = request.app.state.answers
    return await answers.respond(request, limit, build)


@router.get("/{name}/items/{item_id}", response_model=Item, responses=ERRORS)
async def get_item(name: str, item_id: str, service: CatalogsDep) -> Item:
    """One item's label, metadata and image description."""
    return item_view(name, await run_in_threadpool(service.get_item, name, item_id))


def image_etag(sha256: str, thumbnail: bool = False) -> str:
    """The ETag of an item's image (the item's ETag for If-Match on DELETE) or thumbnail."""
    return f'"{sha256[:32]}{"-t" if thumbnail else ""}"'


async def _file(
    name: str, item_id: str, thumbnail: bool, request: Request, service: CatalogService
) -> Response:
    path, ctype, item = await run_in_threadpool(service.item_file, name, item_id, thumbnail)
    etag = image_etag(item.image.sha256, thumbnail)
    # no-cache, not max-age: an id can be deleted and added again with another picture (ids
    # such as SKUs are the client's), and a cache kept showing the old one; the ETag makes
    # each check a 304.
    headers = {
        "ETag": etag,
        "Cache-Control": "private, no-cache" if service.settings.api_key_for_reads else "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    check_if_match(request.headers.get("if-match"), etag, f"item {item_id!r}")
    if none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    file = await run_in_threadpool(open_stored, path, f"item {item_id!r}")
    return StoredFileResponse(file, ctype, headers)


@router.get(
    "/{name}/items/{item_id}/image",
    response_class=StoredFileResponse,
    responses={
        200: {"content": {"image/*": {}}},
        206: {"description": PART, "content": {"image/*": {}}},
        304: {"description": "not modified"},
        **ERRORS,
    },
)
async def get_item_image(
    name: str, item_id: str, request: Request, service: CatalogsDep
) -> Response:
    """The stored original, as uploaded (ETag = content digest)."""
    return await _file(name, item_id, False, request, service)


@router.get(
    "/{name}/items/{item_id}/thumbnail",
    response_class=StoredFileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}},
        206: {"description": PART, "content": {"image/jpeg": {}}},
        304: {"description": "not modified"},
        **ERRORS,
    },
)
async def get_item_thumbnail(
    name: str, item_id: str, request: Request, service: CatalogsDep
) -> Response:
    """A JPEG thumbnail, longest side at most `thumbnail_px` (128 by default)."""
    return await _file(name, item_id, True, request, service)


@router.delete(
    "/{name}/items/{item_id}",
    status_code=204,
    dependencies=[WriteAuth],
    responses={
        412: {"description": "If-Match names another image, or If-None-Match this one"},
        **ERRORS,
    },
)
async def delete_item(name: str, item_id: str, request: Request, service: CatalogsDep) -> Response:
    """Remove an item for good (and its image when nothing else uses it).

    With `If-Match`, only the item whose image has that ETag (the one GET .../image sends,
    `"<first 32 hex digits of the image's sha256>"`; `*` = any) is deleted; else 412 and
    nothing is deleted. Ids are the client's (a SKU may be deleted and added again with
    another picture), so a client deletes the item it looked at, not a newer one."""
    header, none = request.headers.get("if-match"), request.headers.get("if-none-match")

    def check(item: ItemRecord) -> None:
        """Under the write guard, with the delete: no re-add lands in between (round 26)."""
        etag = image_etag(item.image.sha256)
        if header is not None:
            check_if_match(header, etag, f"item {item_id!r}")
        if none is not None and none_match(none, etag):  # RFC 9110 13.2.2 step 3
            raise PreconditionFailed(f"If-None-Match names item {item_id!r}: nothing deleted.")

    conditional = header is not None or none is not None
    await run_in_threadpool(service.delete_item, name, item_id, check if conditional else None)
    return Response(status_code=204)
