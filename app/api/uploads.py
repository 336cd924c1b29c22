"""Read image uploads from a request: multipart `file` parts or a raw body, within limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

from app.errors import BadRequest, InvalidRequest, PayloadTooLarge
from app.imaging import ACCEPTED_TEXT
from app.settings import Settings

# Multipart overhead allowance per part (headers, boundaries).
_PART_OVERHEAD = 16 * 1024


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


# OpenAPI description of the body, since it is parsed by hand (multipart or raw image).
IMAGE_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            f"Either multipart/form-data with one or more `file` parts (a batch), or the raw "
            f"bytes of one image as the body. Accepted: {ACCEPTED_TEXT}; the format is sniffed "
            "from the bytes, the Content-Type is not trusted."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _too_large(settings: Settings) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body exceeds {settings.max_image_bytes:,} bytes per image "
        f"(at most {settings.max_batch_images} images per request).",
        limit_bytes=settings.max_image_bytes,
        limit_images=settings.max_batch_images,
    )


async def _read_raw(request: Request, settings: Settings) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > settings.max_image_bytes:
                raise PayloadTooLarge(
                    f"The image is larger than the limit of {settings.max_image_bytes:,} bytes.",
                    limit_bytes=settings.max_image_bytes,
                )
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise BadRequest("The client disconnected before the body was complete.") from exc
    return b"".join(chunks)


async def read_uploads(request: Request, settings: Settings, field: str = "file") -> list[Upload]:
    """Every image in the request, in order. Raises 400/413/422 problems."""
    limit = settings.max_batch_images * (settings.max_image_bytes + _PART_OVERHEAD)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(settings)
    ctype = request.headers.get("content-type", "").lower()
    if not ctype.startswith("multipart/form-data"):
        data = await _read_raw(request, settings)
        name = request.headers.get("x-filename")
        return [Upload(filename=name, data=data)]
    try:
        form = await request.form(
            max_files=settings.max_batch_images, max_fields=64, max_part_size=64 * 1024
        )
    except (MultiPartException, HTTPException) as exc:
        # Starlette wraps multipart parse errors into HTTPException(400).
        msg = str(exc.detail) if isinstance(exc, HTTPException) else str(exc)
        if "Too many files" in msg:
            raise PayloadTooLarge(
                f"Too many images: at most {settings.max_batch_images} per request.",
                limit_images=settings.max_batch_images,
            ) from exc
        raise BadRequest(f"The multipart body could not be parsed: {msg.rstrip('.')}.") from exc
    except ClientDisconnect as exc:
        raise BadRequest("The client disconnected before the body was complete.") from exc
    parts = form.getlist(field)
    if not parts:
        present = sorted(set(form.keys()))
        raise InvalidRequest(
            f"No '{field}' part in the multipart body"
            + (f" (found: {', '.join(present)})" if present else "")
            + f". Send each image as a '{field}' part.",
        )
    uploads: list[Upload] = []
    for part in parts:
        if not isinstance(part, UploadFile):
            raise InvalidRequest(f"The '{field}' part must be a file upload, not a text field.")
        size = part.size
        if size is not None and size > settings.max_image_bytes:
            raise PayloadTooLarge(
                f"'{part.filename}' is {size:,} bytes; the limit is {settings.max_image_bytes:,}.",
                limit_bytes=settings.max_image_bytes,
            )
        data = await part.read(settings.max_image_bytes + 1)
        if len(data) > settings.max_image_bytes:
            raise _too_large(settings)
        uploads.append(Upload(filename=part.filename, data=data))
    return uploads
