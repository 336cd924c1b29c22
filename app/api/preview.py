"""A picture as the server decodes it, as a small JPEG: for clients that cannot show the format.

Browsers show JPEG, PNG, GIF, WebP and (most) AVIF, but Chromium and Firefox show neither HEIC
(the iPhone's format) nor TIFF, which the server classifies; the page asks here when its own
preview fails. The decode is the one predict and catalogs use (app.ingest.thumbnails): the same
format rules, limits, decode slots and per-request pixel and time budget, EXIF orientation
applied, alpha on white, never upscaled. Work takes turns through the embedding gate
(app.api.embed_gate), as catalog searches do: a burst of costly previews waits its turn (503
after the request deadline) instead of all decoding at once beside predict.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.deps import ReadAuth, SettingsDep
from app.api.disconnect import unless_gone
from app.api.embed_gate import embed_gate, embed_turn
from app.api.query_names import DIGITS
from app.api.uploads import IMAGE_BODY_OPENAPI, image_limits, read_uploads
from app.errors import PayloadTooLarge
from app.ingest import limits_from, thumbnails

DEFAULT_PX: Final = 512
MAX_PX: Final = 1024
SIZE = f"longest side of the preview in pixels (default {DEFAULT_PX}; never upscaled)"

router = APIRouter(prefix="/v1", tags=["images"], dependencies=[ReadAuth])


@router.post(
    "/preview",
    response_class=Response,
    openapi_extra=IMAGE_BODY_OPENAPI,
    responses={
        200: {
            "description": "the picture as a JPEG, upright, alpha on white",
            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
            "headers": {
                "X-Image-Format": {
                    "description": "the format decoded",
                    "schema": {"type": "string"},
                },
                "X-Image-Size": {
                    "description": "the stored picture's width x height in pixels",
                    "schema": {"type": "string"},
                },
            },
        },
        413: {"description": "image too large, or more than one image"},
        415: {"description": "not an image"},
        422: {"description": "damaged image or invalid parameters"},
        503: {"description": "too many image requests at once (Retry-After)"},
    },
)
async def preview(
    request: Request,
    settings: SettingsDep,
    size: Annotated[int, Query(ge=16, le=MAX_PX, description=SIZE), DIGITS] = DEFAULT_PX,
) -> Response:
    """One image (raw body, one multipart `file` part or JSON `{"images": [...]}` with one
    entry) back as a JPEG whose longest side is at most `size`: what the server decoded, for
    showing a format the client cannot draw (HEIC, TIFF). Nothing is stored."""
    await embed_gate(request).refuse_if_full()  # 503 before the body when the gate is full
    uploads = await read_uploads(request, settings, limits=image_limits(settings, files=1))
    if len(uploads) != 1:  # a JSON body with several images (multipart stops at one)
        raise PayloadTooLarge(
            f"Too many images: a preview takes one, not {len(uploads)}.", limit_images=1
        )
    limits, data = limits_from(settings), uploads[0].data
    # a turn once the body is in; a client that leaves while it waits is not decoded for
    made = await unless_gone(request, embed_turn(request, lambda: thumbnails([data], limits, size)))
    thumb = made[0]
    return Response(
        thumb.jpeg,
        media_type="image/jpeg",
        headers={
            "Cache-Control": "no-store",
            "X-Image-Format": thumb.info.format,
            "X-Image-Size": f"{thumb.info.width}x{thumb.info.height}",
        },
    )
