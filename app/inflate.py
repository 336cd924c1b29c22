"""Request bodies in a content coding (RFC 9110 8.4): gzip and deflate, as tritonclient's
request compression sends them to the Open Inference Protocol route, inflated with a bound on
the output (a bomb costs at most `limit` bytes and the CPU to make them).

Several codings (`gzip, deflate`, or repeated header lines, which mean one list) are undone
in reverse order, at most MAX_CODINGS of them; `x-gzip` is gzip (RFC 9110 8.4.1.3). A stream
must end with its end-of-stream marker (a truncated body is refused, not half-read); gzip may
hold several members (RFC 1952), at most MAX_MEMBERS (each member's end copies the rest of the
body: 3.6 MB of empty 20-byte members had cost 21 s of CPU, fuzz round 16); deflate must not be
followed by anything.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Final

from app.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

MAX_CODINGS: Final = 4
MAX_MEMBERS: Final = 16  # gzip members per body (clients send one)
_WBITS: Final = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}
DECODED: Final = frozenset({"identity", *_WBITS})


def codings(values: Iterable[str]) -> list[str]:
    """The codings named by one or more header values, lower-cased, in the order applied."""
    return [c.strip().lower() for v in values for c in v.split(",") if c.strip()]


def inflate(body: bytes, applied: list[str], limit: int) -> bytes:
    """Undo `applied` (in reverse); BadRequest for a damaged or truncated stream,
    PayloadTooLarge once the output would pass `limit`, UnsupportedMediaType for a coding
    not decoded here."""
    todo = [c for c in applied if c != "identity"]
    unknown = [c for c in todo if c not in _WBITS]
    if unknown:
        raise UnsupportedMediaType(
            f"Content-Encoding {', '.join(unknown)!r} is not accepted; use gzip or deflate."
        )
    if len(todo) > MAX_CODINGS:
        raise BadRequest(f"At most {MAX_CODINGS} content codings are undone; got {len(todo)}.")
    for coding in reversed(todo):
        body = _inflate_one(body, coding, limit)
    return body


def _inflate_one(data: bytes, coding: str, limit: int) -> bytes:
    out = bytearray()
    for _ in range(MAX_MEMBERS):
        inflater = zlib.decompressobj(_WBITS[coding])
        try:
            # max_length >= 1 here (0 would mean "no limit")
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadRequest(f"The {coding} body could not be decompressed: {exc}.") from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(
                f"The decompressed body exceeds {limit:,} bytes.", limit_bytes=limit
            )
        if not inflater.eof:
            raise BadRequest(f"The {coding} body is truncated (it ends before its end marker).")
        data = inflater.unused_data
        if not data:
            return bytes(out)
        if coding == "deflate":
            raise BadRequest(f"{len(data):,} bytes follow the end of the deflate stream.")
    raise BadRequest(f"The {coding} body holds more than {MAX_MEMBERS} members; send one.")
