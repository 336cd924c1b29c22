"""The one body reader: raw, JSON and multipart bodies counted while they stream in.

Every route that takes a body reads it here with explicit limits. Bytes are counted as they
arrive (also for chunked bodies without Content-Length) and a 413 is raised before more than
the route's limit is read; a multipart part is checked as it grows, never spooled whole
first; JSON is size-capped before parsing and depth-limited.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import unquote

from pydantic import BaseModel, ValidationError
from python_multipart.multipart import MultipartParser, parse_options_header
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
from app.jsontext import (
    RepeatedKey,
    loads_unique,
    lone_surrogate_at,
    repeated_key_message,
    surrogate_message,
)
from app.numtext import ascii_uint

# Deeper JSON than this is refused (422) before parsing: nothing here needs more, and
# Python's parser would otherwise recurse once per level.
MAX_JSON_DEPTH: Final = 32
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


def check_json_depth(text: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """422 when arrays/objects nest deeper than `max_depth` (strings are skipped)."""
    data = text.encode() if isinstance(text, str) else text
    depth = 0
    in_string = escaped = False
    for b in data:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # quote
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                raise InvalidRequest(f"The JSON nests deeper than {max_depth} levels.")
        elif b in (0x5D, 0x7D):
            depth -= 1


def parse_json(text: bytes | str, where: str = "The JSON body") -> Any:
    """Depth-checked json.loads; any syntax error, or a key given twice in one object, is a
    422 that says where."""
    check_json_depth(text)
    try:
        value = loads_unique(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RepeatedKey as exc:
        raise InvalidRequest(repeated_key_message(where, exc)) from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{where} is not valid JSON: {exc.msg} at position {exc.pos}."
        ) from exc
    except _NotJson as exc:
        raise InvalidRequest(f"{where} is not valid JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # recursion is pre-empted above
        if "digits" in str(exc):  # int() refuses more than sys.get_int_max_str_digits()
            raise InvalidRequest(
                f"{where} holds an integer of more than {sys.get_int_max_str_digits():,} digits."
            ) from exc
        raise InvalidRequest(f"{where} is not valid UTF-8 JSON.") from exc
    bad = lone_surrogate_at(text, value)
    if bad is not None:
        raise InvalidRequest(surrogate_message(where, bad))
    return value


class _NotJson(ValueError):
    pass


def _finite_float(literal: str) -> float:
    """A number literal beyond float64 (1e400) became inf, stored as `Infinity` (not JSON) and
    answered as null: refused like the NaN and Infinity keywords."""
    value = float(literal)
    if not math.isfinite(value):
        raise _NotJson(f"the number {literal[:40]} is beyond what a 64-bit float holds.")
    return value


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser takes them; stored, NaN became null)."""
    raise _NotJson(f"{name} is not a JSON value (RFC 8259 has no NaN or Infinity).")


async def read_json(request: Request, limit: int) -> Any:
    """A JSON body, capped at `limit` bytes before it is parsed; an empty body is {}."""
    raw = await read_body(request, limit)
    return parse_json(raw) if raw.strip() else {}


_M = TypeVar("_M", bound=BaseModel)


def validation_detail(exc: ValidationError) -> str:
    """Pydantic's errors as one line: `field: message; ...`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def _whole_numbers_as_integers(data: Any, exc: ValidationError) -> bool:
    """Where `exc` says an integer was wanted and a float without a fraction came (`"k": 2.0`,
    as Python's json.dumps writes a float: JSON Schema counts it an integer), put the int in
    its place. Only those places: free-form metadata keeps its 2.0. True when any changed."""
    changed = False
    for err in exc.errors():
        value = err.get("input")
        if err["type"] != "int_type" or not isinstance(value, float) or not value.is_integer():
            continue
        *path, last = err["loc"]
        node = data
        try:
            for key in path:
                node = node[key]
            if node[last] is value:
                node[last] = int(value)
                changed = True
        except (KeyError, IndexError, TypeError):
            continue  # a union's branch name in the path: not a place in the body
    return changed


async def read_model(request: Request, model: type[_M], limit: int, what: str) -> _M:
    """A JSON body capped at `limit` bytes and depth-checked before parsing, validated into
    `model` strictly (JSON types as declared: `true` or `"5"` is not a number, `5.5` not an
    integer; lax parsing took `"k": true` as k = 1 and `"2"` inside a vector as 2.0; `2.0` is
    the integer 2, as in JSON Schema); any fault is a 4xx problem that says which field and
    why."""
    data = await read_json(request, limit)
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        if not _whole_numbers_as_integers(data, exc):
            raise InvalidRequest(f"Invalid {what}: {validation_detail(exc)}") from exc
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid {what}: {validation_detail(exc)}") from exc


def json_body_openapi(
    model: type[BaseModel], limit_setting: str = "IMGCLASS_MAX_JSON_BYTES"
) -> dict[str, Any]:
    """OpenAPI text for a route that reads its JSON body with `read_model`."""
    return {
        "requestBody": {
            "required": True,
            "description": f"JSON, at most {limit_setting} bytes and {MAX_JSON_DEPTH} levels deep.",
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


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
            raise InvalidRequest(
                f"The '{self._name}' field is not UTF-8 text. A file part needs a filename in "
                f'its Content-Disposition (form-data; name="{self._name}"; filename="a.jpg").'
            ) from exc
        self.form.fields.append((self._name, text))


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
            async for chunk in chunks:
                parser.write(chunk)
        parser.finalize()
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
