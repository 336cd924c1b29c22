"""The one body reader: raw, JSON and multipart bodies counted while they stream in.

Every route that takes a body reads it here with explicit limits. Bytes are counted as they
arrive (also for chunked bodies without Content-Length) and a 413 is raised before more than
the route's limit is read; a multipart part is checked as it grows, never spooled whole
first. JSON bodies are read through here too (app.api.json_bodies).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.api.body_budget import BodyBudget
from app.errors import (
    BadRequest,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedMediaType,
)
from app.numtext import ascii_uint

# Settings.body_timeout_s, for a request outside the app (tests, benches).
DEFAULT_BODY_TIMEOUT_S: Final = 60.0
# RFC 5987/2231 `filename*=charset'lang'percent-encoded` (curl -F, some HTTP libraries);
# python-multipart's header parser drops it, which made such a part a text field.
_FILENAME_STAR: Final = re.compile(rb"""filename\*\s*=\s*"?([^;"]*)""", re.IGNORECASE)


@dataclass(frozen=True)
class BodyLimits:
    """What one route accepts. `total` bounds the whole body as it streams."""

    total: int
    file_bytes: int = 0  # per file part
    files: int = 0  # file parts
    text_bytes: int = 1024  # per text field
    fields: int = 16  # text fields


@dataclass(frozen=True)
class FilePart:
    name: str
    filename: str | None
    data: bytes


@dataclass
class Form:
    files: list[FilePart] = field(default_factory=list)
    fields: list[tuple[str, str]] = field(default_factory=list)

    def texts(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]

    def file_parts(self, name: str) -> list[FilePart]:
        return [f for f in self.files if f.name == name]

    def names(self) -> list[str]:
        return sorted({f.name for f in self.files} | {k for k, _ in self.fields})


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def is_json(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").lower().split(";")[0].strip()
    # text/json: the media type some older clients still send for JSON
    return ctype in ("application/json", "text/json") or ctype.endswith("+json")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body exceeds this endpoint's limit of {limit:,} bytes.", limit_bytes=limit
    )


def _body_timeout_s(request: Request) -> float:
    app = request.scope.get("app")
    settings = getattr(getattr(app, "state", None), "settings", None)
    return float(getattr(settings, "body_timeout_s", DEFAULT_BODY_TIMEOUT_S))


def _timed_out(timeout_s: float) -> RequestTimeout:
    return RequestTimeout(
        f"The request body did not arrive in full within {timeout_s:g} s "
        "(IMGCLASS_BODY_TIMEOUT_S); send the whole body at once, with a Content-Length that "
        "matches it.",
        timeout_s=timeout_s,
    )


async def stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks; 413 as soon as more than `limit` bytes have arrived, 503 when the
    process's body budget (app.api.body_budget) has no room for it. Callers bound the time it
    takes with one asyncio.timeout around the whole read and close it when done (read_body,
    read_form), which returns its share of the budget."""
    length = ascii_uint((request.headers.get("content-length") or "").strip())
    if length is not None and length > limit:
        raise _too_large(limit)
    budget: BodyBudget | None = getattr(request.app.state, "body_budget", None)
    reserved = 0
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            if budget is not None and total > reserved:
                budget.reserve(total - reserved)
                reserved = total
            if chunk:
                yield chunk
    except ClientDisconnect as exc:
        raise BadRequest("The client disconnected before the body was complete.") from exc
    finally:
        if budget is not None:
            budget.release(reserved)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (413 beyond), within body_timeout_s (408)."""
    # One deadline per body, around the whole read: uvicorn has no body read timeout, so a
    # client sending slowly (or less than its Content-Length) would hold the connection.
    # asyncio.timeout costs ~4 us once; a timer per chunk would cost that per chunk.
    timeout_s = _body_timeout_s(request)
    try:
        async with asyncio.timeout(timeout_s), aclosing(stream(request, limit)) as chunks:
            return b"".join([c async for c in chunks])
    except TimeoutError as exc:
        raise _timed_out(timeout_s) from exc


class _FormBuilder:
    """python-multipart callbacks that enforce the limits while each part grows."""

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.form = Form()
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._name = ""
        self._filename: str | None = None
        self._is_file = False
        self._buf = bytearray()
        self._texts = 0

    def on_part_begin(self) -> None:
        self._headers = {}
        self._buf = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field = bytearray()
        self._value = bytearray()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest("A multipart part has no 'Content-Disposition: form-data; name=...'.")
        self._name = options[b"name"].decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        star = _FILENAME_STAR.search(self._headers.get("content-disposition", b""))
        if star is not None:  # RFC 5987 wins over a plain filename, as in RFC 6266
            value = star.group(1).decode("latin-1").split("'", 2)[-1]
            raw_filename = unquote(value, errors="replace").encode()
        self._is_file = raw_filename is not None
        self._filename = raw_filename.decode("utf-8", "replace") if raw_filename else None
        lim = self.limits
        if self._is_file and len(self.form.files) >= lim.files:
            raise PayloadTooLarge(
                f"Too many files: at most {lim.files} per request.", limit_images=lim.files
            )
        if not self._is_file:
            self._texts += 1
            if self._texts > lim.fields:
                raise PayloadTooLarge(f"Too many form fields: at most {lim.fields} per request.")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        cap = self.limits.file_bytes if self._is_file else self.limits.text_bytes
        if len(self._buf) + (end - start) > cap:
            what = f"'{self._filename}'" if self._is_file else f"The '{self._name}' field"
            raise PayloadTooLarge(
                f"{what} is larger than the limit of {cap:,} bytes.", limit_bytes=cap
            )
        self._buf += data[start:end]

    def on_part_end(self) -> None:
        if self._is_file:
            self.form.files.append(FilePart(self._name, self._filename, bytes(self._buf)))
            return
        try:
            text = self._buf.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = self._buf[exc.start]
            said = f"The '{self._name}' field is not UTF-8 text (byte 0x{byte:02x} at {exc.start})."
            if b"\x00" in self._buf:  # a file's bytes (every image format has NULs early)
                raise InvalidRequest(
                    f"{said} A file part needs a filename in its Content-Disposition "
                    f'(form-data; name="{self._name}"; filename="a.jpg").'
                ) from exc
            raise InvalidRequest(
                f"{said} Text fields are read as UTF-8: send it encoded so."
            ) from exc
        self.form.fields.append((self._name, text))


# Text before the first boundary (RFC 2046 5.1.1's preamble, which python-multipart refuses)
# is skipped up to this many bytes; no HTTP client sends any.
MAX_PREAMBLE: Final = 1024


async def _without_preamble(
    chunks: AsyncGenerator[bytes, None], boundary: bytes
) -> AsyncGenerator[bytes, None]:
    """The body from its first boundary line on (an RFC 2046 preamble dropped)."""
    head: bytes | None = b""
    first = b"--" + boundary
    async for chunk in chunks:
        if head is None:
            yield chunk
            continue
        head += chunk
        if len(head) < len(first) and first.startswith(head):
            continue  # not yet known
        found = head.find(b"\r\n" + first)
        start = 0 if head.startswith(first) else found + 2 if found >= 0 else -1
        if start < 0 and len(head) <= MAX_PREAMBLE + len(first) + 2:
            continue
        yield head[max(start, 0) :]  # no boundary at all: the parser says what is wrong
        head = None
    if head:
        yield head


async def read_form(request: Request, limits: BodyLimits) -> Form:
    """Parse multipart/form-data as it streams, within `limits`. Raises 400/413/415/422."""
    cached: Form | None = getattr(request.state, "imgclass_form", None)
    if cached is not None:
        return cached
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType("Send the body as multipart/form-data.")
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("The multipart Content-Type has no boundary.")
    builder = _FormBuilder(limits)
    callbacks: Any = {
        name: getattr(builder, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    timeout_s = _body_timeout_s(request)
    try:
        parser = MultipartParser(boundary, callbacks)  # refuses a boundary over 256 bytes
        async with (
            asyncio.timeout(timeout_s),  # as in read_body
            aclosing(stream(request, limits.total)) as chunks,
        ):
            async for chunk in _without_preamble(chunks, boundary):
                parser.write(chunk)
        parser.finalize()
        if parser.state not in (MultipartState.START, MultipartState.END):
            raise BadRequest(
                "The multipart body ended before its final '--' + boundary + '--' line: it was "
                "cut short, so its last part is incomplete. Send the whole body."
            )
    except ServiceError:
        raise
    except TimeoutError as exc:
        raise _timed_out(timeout_s) from exc
    except Exception as exc:  # python-multipart's parse errors
        raise BadRequest(
            f"The multipart body could not be parsed ({str(exc).rstrip('.')}). Send "
            "multipart/form-data as HTTP clients write it: parts between '--' + the Content-Type's "
            "boundary lines, each with a Content-Disposition header, a final '--boundary--'."
        ) from exc
    request.state.imgclass_form = builder.form
    return builder.form
