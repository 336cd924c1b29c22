"""Byte ranges of stored images: one range served, the rest ignored or 416 (RFC 9110 14.2)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.api.stored_file import (
    CHUNK,
    PreconditionFailed,
    RangeNotSatisfiable,
    StoredFileResponse,
    byte_range,
    check_if_match,
    if_match,
    none_match,
    open_stored,
    range_applies,
)
from app.errors import NotFound

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "span"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=900-", (900, 1000)),
        ("bytes=900-5000", (900, 1000)),
        ("bytes=-100", (900, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes = 0 - 9", (0, 10)),
        ("Bytes=0-9", (0, 10)),  # range units compare case-insensitively (RFC 9110 14.1)
        # ignored: the whole file is sent
        ("bytes=abc", None),
        ("bytes=-", None),
        ("bytes=5-2", None),
        ("items=0-9", None),
        ("bytes=0-1,3-4", None),
        ("bytes=\u00b2-", None),
        ("bytes=\u0663-", None),  # DIGIT is ASCII (an Arabic-Indic 3 is not a number here)
        # numbers of any length (more than 18 digits was "malformed": the whole file)
        ("bytes=0-" + "9" * 20, (0, 1000)),
        ("bytes=0-" + "9" * 5000, (0, 1000)),  # past int()'s 4,300 digits
        ("bytes=-" + "9" * 20, (0, 1000)),
        ("bytes=" + "0" * 30 + "5-" + "0" * 30 + "9", (5, 10)),
        ("bytes=" + "9" * 21 + "-" + "9" * 20, None),  # last before first
        ("bytes=" + "9" * 20 + "-5", None),
    ],
)
def test_byte_range(header: str | None, span: tuple[int, int] | None) -> None:
    assert byte_range(header, SIZE) == span


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=" + "9" * 20 + "-",
        "bytes=" + "9" * 30 + "-",
        "bytes=" + "9" * 5000 + "-",
        "bytes=" + "9" * 20 + "-" + "9" * 21,
        "bytes=" + "9" * 20 + "-" + "9" * 20,
        "bytes=-" + "0" * 30,
    ],
)
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, SIZE)


def _serve(
    response: StoredFileResponse, headers: list[tuple[bytes, bytes]]
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers}
    asyncio.run(response(scope, receive, send))
    return sent


def test_a_file_removed_after_it_was_opened_is_still_sent_whole(tmp_path: Path) -> None:
    """A delete landing between 'open' and the last chunk (it was a broken body once)."""
    data = bytes(range(256)) * (CHUNK // 128 + 3)  # several chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    response = StoredFileResponse(open_stored(path, "item 'a'"), "image/png", {})
    path.unlink()
    sent = _serve(response, [])
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(data)).encode()
    assert b"".join(m["body"] for m in sent[1:]) == data
    assert sent[-1]["more_body"] is False and response.file.closed
    path.write_bytes(data)
    ranged = StoredFileResponse(open_stored(path, "item 'a'"), "image/png", {})
    path.unlink()
    sent = _serve(ranged, [(b"range", b"bytes=-10")])
    assert sent[0]["status"] == 206 and b"".join(m["body"] for m in sent[1:]) == data[-10:]


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="missing from the data folder"):
        open_stored(tmp_path / "gone", "item 'a'")


ETAG = '"abc"'


@pytest.mark.parametrize(
    ("if_range", "applies"),
    [
        (None, True),
        ('"abc"', True),
        (' "abc" ', True),
        ('"old"', False),
        ('W/"abc"', False),  # If-Range compares strongly
        ("Tue, 01 Dec 2026 10:00:00 GMT", False),  # no Last-Modified is sent
        ("", False),
    ],
)
def test_range_applies_only_for_this_files_strong_etag(if_range: str | None, applies: bool) -> None:
    assert range_applies(if_range, ETAG) is applies


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, False),
        ('"abc"', True),
        ('"x", "abc"', True),
        ('W/"abc"', True),  # If-None-Match compares weakly
        ("*", True),
        ('"abcd"', False),
        ("", False),
    ],
)
def test_none_match(header: str | None, match: bool) -> None:
    assert none_match(header, ETAG) is match


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, True),  # no condition
        ('"abc"', True),
        (' "x" , "abc" ', True),
        ("*", True),  # the caller found the target: any current representation
        ('W/"abc"', False),  # If-Match compares strongly (RFC 9110 13.1.1)
        ('"abcd"', False),
        ("", False),
    ],
)
def test_if_match(header: str | None, match: bool) -> None:
    assert if_match(header, ETAG) is match


def test_a_failed_if_match_is_a_412_naming_the_current_tag() -> None:
    check_if_match('"abc"', ETAG, "item 'a'")
    with pytest.raises(PreconditionFailed) as caught:
        check_if_match('"old"', ETAG, "item 'a'")
    problem = caught.value.to_problem()
    assert problem["status"] == 412 and problem["type"] == "/problems/precondition-failed"
    assert "item 'a'" in problem["detail"] and ETAG in problem["detail"]


def test_a_stale_if_range_gets_the_whole_file(tmp_path: Path) -> None:
    """A client resuming a download of an image that has since changed must not splice two
    images: a Range under a stale If-Range is ignored (RFC 9110 13.1.5)."""
    data = bytes(range(200))
    path = tmp_path / "blob"
    path.write_bytes(data)

    def serve(headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        return _serve(StoredFileResponse(open_stored(path, "a"), "image/png", {"ETag": ETAG}),
                      headers)  # fmt: skip

    fresh = serve([(b"range", b"bytes=100-"), (b"if-range", ETAG.encode())])
    assert fresh[0]["status"] == 206 and b"".join(m["body"] for m in fresh[1:]) == data[100:]
    stale = serve([(b"range", b"bytes=100-"), (b"if-range", b'"old"')])
    assert stale[0]["status"] == 200 and b"".join(m["body"] for m in stale[1:]) == data
    assert b"content-range" not in dict(stale[0]["headers"])
