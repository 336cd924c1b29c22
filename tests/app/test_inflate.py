"""Request bodies in a content coding (app.inflate): gzip/deflate/x-gzip, stacked codings,
gzip members, truncation and trailing bytes, and the bound on the inflated size."""

from __future__ import annotations

import gzip
import zlib

import pytest

from app.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from app.inflate import MAX_CODINGS, MAX_MEMBERS, codings, inflate

DATA = b'{"inputs": []}' * 100


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # the same bytes (and test ids) in every process


LIMIT = 10_000


def test_codings_are_one_list_across_header_lines() -> None:
    assert codings(["gzip", " Deflate , identity"]) == ["gzip", "deflate", "identity"]
    assert codings([]) == [] and codings([" , "]) == []


@pytest.mark.parametrize(
    ("body", "applied"),
    [
        (DATA, []),
        (DATA, ["identity"]),
        (_gz(DATA), ["gzip"]),
        (_gz(DATA), ["x-gzip"]),  # RFC 9110 8.4.1.3
        (zlib.compress(DATA), ["deflate"]),  # HTTP's deflate is the zlib format
        (_gz(zlib.compress(DATA)), ["deflate", "gzip"]),  # undone in reverse
        (_gz(DATA[:700]) + _gz(DATA[700:]), ["gzip"]),  # two members
    ],
    ids=["plain", "identity", "gzip", "x-gzip", "deflate", "stacked", "members"],
)
def test_inflates(body: bytes, applied: list[str]) -> None:
    assert inflate(body, applied, LIMIT) == DATA


@pytest.mark.parametrize(
    ("body", "applied", "error", "message"),
    [
        (_gz(DATA)[:-9], ["gzip"], BadRequest, "truncated"),
        (_gz(DATA) + b"junk", ["gzip"], BadRequest, "could not be decompressed"),
        (zlib.compress(DATA) + b"junk", ["deflate"], BadRequest, "follow the end"),
        (b"not gzip", ["gzip"], BadRequest, "could not be decompressed"),
        (_gz(b" " * (LIMIT + 1)), ["gzip"], PayloadTooLarge, "exceeds 10,000"),
        # the bound holds across members, not per member
        (_gz(b" " * 6000) * 2, ["gzip"], PayloadTooLarge, "exceeds"),
        (DATA, ["br"], UnsupportedMediaType, "'br' is not accepted"),
        (DATA, ["gzip"] * (MAX_CODINGS + 1), BadRequest, "At most"),
    ],
    ids=["truncated", "junk", "deflate-junk", "not-gzip", "bomb", "members-bomb", "br", "many"],
)
def test_refuses(body: bytes, applied: list[str], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        inflate(body, applied, LIMIT)


def test_a_bomb_costs_at_most_the_limit() -> None:
    bomb = _gz(b"\0" * 50_000_000)  # ~50 KB on the wire
    with pytest.raises(PayloadTooLarge):
        inflate(bomb, ["gzip"], LIMIT)


def test_gzip_members_are_bounded() -> None:
    """Fuzz round 16: each member's end copied the rest of the body, so a body of many empty
    members cost CPU quadratic in its size (3.6 MB, 21 s). At most MAX_MEMBERS are read."""
    assert inflate(_gz(b"a") * MAX_MEMBERS, ["gzip"], LIMIT) == b"a" * MAX_MEMBERS
    many = _gz(b"") * 200_000  # 4 MB of empty members
    with pytest.raises(BadRequest, match=f"more than {MAX_MEMBERS} members"):
        inflate(many, ["gzip"], LIMIT)
