"""JSON image input for the v1 API: {"images": [{"b64": "..."} | {"url": "https://..."}]}.

Each entry becomes the same bytes a multipart part would be, so decoding goes through the one
ingestion policy. base64 is size-checked before it is decoded; URLs go through app.url_fetch
(off unless IMGCLASS_URL_FETCH_ENABLED) with one deadline for the whole request.
"""

from __future__ import annotations

import binascii
import json
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit

from app.errors import InvalidRequest, PayloadTooLarge, ServiceError
from app.jsontext import (
    NotJson,
    RepeatedKey,
    json_kind,
    loads_strict,
    lone_surrogate_at,
    repeated_key_message,
    surrogate_message,
    too_many_digits,
)
from app.settings import Settings
from app.url_fetch import FetchPolicy, fetch_image

_DATA_URL: Final = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)
# JSON punctuation (, : { [) allowed per image entry before parsing (an entry needs about 4;
# URLs with commas or a data URL add a few).
_MARKS_PER_IMAGE: Final = 64
_URLSAFE: Final = str.maketrans("-_", "+/")
_QUOTE_FREE: Final = re.compile(rb'[^"]{1024,}')
SHAPE_HINT: Final = 'Send {"images": [{"b64": "<base64>"} or {"url": "https://..."}]}.'


@dataclass(frozen=True)
class JsonImage:
    filename: str | None
    data: bytes


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        enabled=settings.url_fetch_enabled,
        allow_http=settings.url_allow_http,
        allowed_hosts=tuple(settings.url_allowed_hosts),
        private_allowlist=tuple(settings.url_private_allowlist),
        max_bytes=settings.max_image_bytes,
        timeout_s=settings.url_timeout_s,
        max_redirects=settings.url_max_redirects,
    )


def _too_large(where: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{where} is larger than the limit of {limit:,} bytes once decoded.", limit_bytes=limit
    )


def _decode_b64(text: str, limit: int, where: str) -> bytes:
    """The bytes of a base64 text. binascii reads an ASCII str in place (base64.b64decode
    first made an ASCII copy of it, up to 27 MB); a copy is made only to drop whitespace or
    to translate the URL-safe alphabet when the text has them."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    # What clients send besides strict RFC 4648: MIME line breaks, the URL-safe alphabet,
    # padding left off. All are taken; anything else outside the alphabet is refused.
    text = "".join(text.split())  # the same string when it has no whitespace
    if len(text) // 4 * 3 > limit + 3:
        raise _too_large(where, limit)
    if "-" in text or "_" in text:
        text = text.translate(_URLSAFE)
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        return binascii.a2b_base64(text, strict_mode=True)  # base64.b64decode's validate=True
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"{where}: 'b64' is not valid base64 ({exc}); send the file's bytes in the base64 "
            "alphabet (A-Z a-z 0-9 + / or - _), optionally as a data: URL."
        ) from exc


def _longest_string_check(raw: bytes, limit: int) -> None:
    """413 before parsing for a body holding a string longer than the base64 of an image at
    the limit can be: parsing a 28 MiB body and its one string took a worker up by 90-160 MiB,
    only to refuse it (round 36). A string's characters that cannot be base64 are not counted:
    escapes (a backslash and what follows: at most one character each), escaped line breaks
    and tabs (none), spaces, and a data: URL prefix (up to 256); counted over the whole body,
    which only ever lowers the bound."""
    most = (limit + 2) // 3 * 4 + 256
    longest = max((m.end() - m.start() for m in _QUOTE_FREE.finditer(raw)), default=0)
    if longest <= most:
        return
    slack = raw.count(b"\\")
    if slack:  # these count twice (two characters for none)
        slack += sum(raw.count(e) for e in (b"\\n", b"\\r", b"\\t"))
    if longest - slack - raw.count(b" ") > most:
        raise PayloadTooLarge(
            f"The JSON body holds a string of {longest:,} characters: the base64 of an image "
            f"within the limit of {limit:,} bytes takes at most {most - 256:,}. Send smaller "
            "images, or upload them as multipart/form-data files.",
            limit_bytes=limit,
        )


def _check_structure(raw: bytes, max_images: int) -> None:
    """422 for a body with far more JSON values than the one accepted shape can hold, before
    it is parsed: 30 MB of `{},` became 10 million dicts (+770 MB, 0.7 s with the event loop
    stopped). Base64 has none of these characters; a data URL or an image URL a few."""
    marks = sum(raw.count(c) for c in (b",", b":", b"{", b"["))
    if marks > _MARKS_PER_IMAGE * (max_images + 1):
        raise InvalidRequest(
            f"The JSON body holds far more values than {max_images} image entries need. "
            f"{SHAPE_HINT}"
        )


def parse_images(raw: bytes, settings: Settings) -> list[dict[str, Any]]:
    """Validate the JSON document's shape; returns the image entries (not yet fetched)."""
    _check_structure(raw, settings.max_batch_images)
    _longest_string_check(raw, settings.max_image_bytes)
    try:
        doc = loads_strict(raw)
    except RepeatedKey as exc:
        raise InvalidRequest(f"{repeated_key_message('The JSON body', exc)} {SHAPE_HINT}") from exc
    except NotJson as exc:
        raise InvalidRequest(f"The JSON body is not valid JSON: {exc} {SHAPE_HINT}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The JSON body is not valid JSON: {exc.msg} at position {exc.pos}. {SHAPE_HINT}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        said = too_many_digits(exc) or "is not valid JSON"
        raise InvalidRequest(f"The JSON body {said}. {SHAPE_HINT}") from exc
    bad = lone_surrogate_at(raw, doc)
    if bad is not None:
        raise InvalidRequest(surrogate_message("The JSON body", bad))
    if not isinstance(doc, dict) or set(doc) != {"images"}:
        raise InvalidRequest(
            f"The JSON body must be an object with one key, 'images'. {SHAPE_HINT}"
        )
    if not isinstance(doc["images"], list):
        raise InvalidRequest(
            f"'images' must be a list, not {json_kind(doc['images'])}. {SHAPE_HINT}"
        )
    entries = doc["images"]
    if not entries:
        raise InvalidRequest(f"'images' is empty. {SHAPE_HINT}")
    if len(entries) > settings.max_batch_images:
        raise PayloadTooLarge(
            f"Too many images: at most {settings.max_batch_images} per request.",
            limit_images=settings.max_batch_images,
        )
    for i, entry in enumerate(entries):
        ok = isinstance(entry, dict) and len(entry) == 1
        key = next(iter(entry)) if ok else None
        if not ok or key not in ("b64", "url") or not isinstance(entry[key], str):
            raise InvalidRequest(
                f'images[{i}] must be {{"b64": "..."}} or {{"url": "..."}}. {SHAPE_HINT}',
                image_index=i,
            )
    return entries


def fetch_bytes_bound(entries: list[dict[str, Any]], settings: Settings) -> int:
    """The most bytes fetching these entries' URLs can bring in (load_images' bound)."""
    urls = sum(1 for e in entries if "url" in e)
    return min(urls * settings.max_image_bytes, settings.max_request_bytes)


def load_images(entries: list[dict[str, Any]], settings: Settings) -> list[JsonImage]:
    """Decode the base64 entries and fetch the URL ones (blocking: run in a worker thread).
    Fetched images together are capped at max_request_bytes, as an upload's are: 32 URLs of
    20 MB each made one small request download 640 MB."""
    policy = fetch_policy(settings)
    deadline = time.monotonic() + policy.timeout_s
    images: list[JsonImage] = []
    fetched = 0
    for i, entry in enumerate(entries):
        where = f"images[{i}]"
        if "b64" in entry:  # taken out of the entry: each text goes once it is decoded
            data = _decode_b64(entry.pop("b64"), settings.max_image_bytes, where)
            images.append(JsonImage(None, data))
            continue
        url = entry["url"]
        room = settings.max_request_bytes - fetched
        try:
            if room <= 0:
                raise _fetched_too_much(settings.max_request_bytes)
            data = fetch_image(
                url, replace(policy, max_bytes=min(policy.max_bytes, room)), deadline=deadline
            )
        except PayloadTooLarge as too_large:
            # over the request's total rather than this image's own limit: say so
            err = _fetched_too_much(settings.max_request_bytes) if room < policy.max_bytes else None
            raise _named(err or too_large, where, i, len(entries)) from None
        except ServiceError as exc:
            raise _named(exc, where, i, len(entries)) from None
        fetched += len(data)
        name = urlsplit(url).path.rsplit("/", 1)[-1][:200]
        images.append(JsonImage(name or None, data))
    return images


def _named(exc: ServiceError, where: str, i: int, n: int) -> ServiceError:
    """A fetch error of image i of n, naming the image when there are several."""
    if n > 1:
        exc.detail = f"{where}: {exc.detail}"
        exc.extra["image_index"] = i
    return exc


def _fetched_too_much(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The images fetched from URLs exceed {limit:,} bytes together (IMGCLASS_MAX_REQUEST_BYTES"
        ", the limit of one request's images); send fewer or smaller images per request.",
        limit_bytes=limit,
    )
