"""Read image uploads from a request: multipart `file` parts or a raw body, within limits."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from app.api.forms import BodyLimits, Form, is_json, is_multipart, read_body, read_form
from app.api.json_input import read_json_images
from app.errors import InvalidRequest
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
            f"Either multipart/form-data with one or more `file` parts (a batch), the raw "
            'bytes of one image as the body, or JSON `{"images": [{"b64": ...} | '
            '{"url": ...}]}` (URLs only when the server enables them). '
            f"Accepted: {ACCEPTED_TEXT}; the format is sniffed from the bytes, the Content-Type "
            "is not trusted."
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
            # app/json_images.py: base64 or (when IMGCLASS_URL_FETCH_ENABLED) image URLs.
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "properties": {"b64": {"type": "string"}},
                                        "required": ["b64"],
                                        "additionalProperties": False,
                                    },
                                    {
                                        "type": "object",
                                        "properties": {"url": {"type": "string", "format": "uri"}},
                                        "required": ["url"],
                                        "additionalProperties": False,
                                    },
                                ]
                            },
                        }
                    },
                    "required": ["images"],
                    "additionalProperties": False,
                }
            },
        },
    }
}


def image_limits(settings: Settings, *, files: int | None = None, **text: int) -> BodyLimits:
    """Per-route limits of an image upload: `files` images of at most max_image_bytes each,
    the whole body at most max_request_bytes (never less than one image)."""
    return BodyLimits(
        total=max(settings.max_request_bytes, settings.max_image_bytes + _PART_OVERHEAD),
        file_bytes=settings.max_image_bytes,
        files=files if files is not None else settings.max_batch_images,
        **text,
    )


def uploads_from(form: Form, field: str = "file", fields: Collection[str] = ()) -> list[Upload]:
    """The images of a parsed form, in order; 422 when there is none, or when the form has a
    part that is neither `field` nor one of the route's text `fields` (a `top_k` or a
    misspelt `lable` sent as a form field was ignored in silence)."""
    parts = form.file_parts(field)
    if not parts:
        if form.texts(field):
            raise InvalidRequest(f"The '{field}' part must be a file upload, not a text field.")
        present = form.names()
        raise InvalidRequest(
            f"No '{field}' part in the multipart body"
            + (f" (found: {', '.join(present)})" if present else "")
            + f". Send each image as a '{field}' part.",
        )
    unknown = [n for n in form.names() if n != field and n not in fields]
    if unknown:
        takes = ", ".join(f"'{n}'" for n in (field, *fields))
        raise InvalidRequest(
            f"Unknown form field(s) {', '.join(repr(n[:64]) for n in unknown[:5])}: this route "
            f"reads {takes}. Options such as top_k, similar or label are query parameters "
            "(?top_k=3) unless the route lists them here."
        )
    return [Upload(filename=p.filename, data=p.data) for p in parts]


async def read_uploads(
    request: Request, settings: Settings, field: str = "file", limits: BodyLimits | None = None
) -> list[Upload]:
    """Every image in the request, in order: multipart `file` parts or the raw body.
    Raises 400/413/422 problems; nothing beyond the route's limits is read."""
    limits = limits or image_limits(settings)
    if is_json(request):  # {"images": [{"b64": ...} | {"url": ...}]}
        return [Upload(i.filename, i.data) for i in await read_json_images(request, settings)]
    if not is_multipart(request):
        data = await read_body(request, settings.max_image_bytes)
        return [Upload(filename=request.headers.get("x-filename"), data=data)]
    return uploads_from(await read_form(request, limits), field)
