"""Send a stored image (catalog originals and thumbnails) from a file opened before the answer
starts: a delete that lands meanwhile cannot cut the body short (an unlinked file stays
readable through its open descriptor), and every error is problem+json.

Byte ranges: one range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) gets 206; a range past the end
gets 416 problem+json with `Content-Range: bytes */size`, however many digits its numbers have
(20 digits were a malformed header once, so the whole file was sent); a malformed header or
several ranges are ignored and the whole file is sent (RFC 9110 section 14.2 lets a server
ignore Range).
`If-Range` (RFC 9110 section 13.1.5): the range is honoured only when it names this file's
ETag, compared strongly; a weak tag, another tag or a date (no Last-Modified is sent) gets the
whole file, so a client resuming a download never splices two different images.

`If-Match` (RFC 9110 section 13.1.1): the routes call `check_if_match` before anything else
(before If-None-Match, 13.2.2), so a stale tag gets 412 and nothing is sent or done.
`If-Unmodified-Since` is ignored: these answers send no Last-Modified, and a server without a
modification date ignores it (13.1.4).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO, Final

import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.problems import problem_response
from app.errors import NotFound, ServiceError
from app.fsutil import check_folder

CHUNK: Final = 64 * 1024
# DIGIT is ASCII (RFC 9110 14.1.1; units compare case-insensitively, 14.1); no length cap here:
# the head is capped (64 KB) and a long number is read by _number.
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
_PAST_ANY_FILE: Final = 10**18


class PreconditionFailed(ServiceError):
    """If-Match named none of the target's current ETags: nothing was sent or changed."""

    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class RangeNotSatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single satisfiable range; None to send the whole file."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if m is None or (not m[1] and not m[2]):
        return None  # malformed or several ranges: ignored
    if not m[1]:  # the last n bytes
        n = _number(m[2])
        if n == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size
    if m[2] and _order(m[2]) < _order(m[1]):
        return None  # last before first: an invalid range spec, ignored
    start = _number(m[1])
    if start >= size:
        raise RangeNotSatisfiable
    end = size if not m[2] else _number(m[2]) + 1
    return start, min(end, size)


def _order(digits: str) -> tuple[int, str]:
    """Sorts as the number does, at any length."""
    digits = digits.lstrip("0") or "0"
    return len(digits), digits


def _number(digits: str) -> int:
    """The number, or one past any file's size for more than 18 digits: int() refuses over
    4,300 digits (a ValueError, a 500), and no comparison with a file size can tell."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _PAST_ANY_FILE


def range_applies(if_range: str | None, etag: str | None) -> bool:
    """Whether a Range header may be honoured given the request's If-Range (strong match)."""
    if if_range is None:
        return True
    tag = if_range.strip()
    return etag is not None and not tag.startswith("W/") and tag == etag


def none_match(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names this ETag (weak comparison, `*` matches), i.e. a 304."""
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag in [t.removeprefix("W/") for t in tags]


def if_match(header: str | None, etag: str) -> bool:
    """Whether If-Match lets the request go on: absent, `*` (callers ask once the target was
    found: it exists), or naming this ETag, compared strongly (a weak tag never matches)."""
    if header is None:
        return True
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags


def check_if_match(header: str | None, etag: str, what: str) -> None:
    """412 problem unless If-Match lets the request go on (RFC 9110 13.1.1)."""
    if not if_match(header, etag):
        raise PreconditionFailed(
            f"If-Match names none of the current ETags of {what}: it is {etag} now, so it "
            "changed (or was replaced) since you read it; nothing was sent or changed."
        )


def open_stored(path: Path, what: str) -> BinaryIO:
    """The file, open; 404 problem when it is gone, 503 when the data folder holding it was
    removed or replaced under the server (blocking: call it in a worker thread)."""
    try:
        return path.open("rb")
    except (FileNotFoundError, IsADirectoryError) as exc:
        check_folder(path, reading=True)  # an item listed a moment ago is not the client's 404
        raise NotFound(f"The image file of {what} is missing from the data folder.") from exc


class StoredFileResponse(Response):
    """Streams an open file; closes it when done, also when the client goes away."""

    def __init__(
        self, file: BinaryIO, media_type: str, headers: dict[str, str], status_code: int = 200
    ) -> None:
        # status_code: 200, or 206 for a range (decided when sent); FastAPI's OpenAPI reads it.
        super().__init__(
            status_code=status_code,
            media_type=media_type,
            headers={**headers, "Accept-Ranges": "bytes"},
        )
        self.file = file
        self.size = os.fstat(file.fileno()).st_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._send(scope, receive, send)
        finally:
            self.file.close()

    async def _send(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = dict(scope.get("headers") or [])
        header = raw.get(b"range")
        if_range = raw.get(b"if-range")
        etag = self.headers.get("etag")
        if not range_applies(if_range.decode("latin-1") if if_range is not None else None, etag):
            header = None
        try:
            span = byte_range(header.decode("latin-1") if header is not None else None, self.size)
        except RangeNotSatisfiable:
            problem = problem_response(
                416,
                "Range not satisfiable",
                f"The file is {self.size:,} bytes; the requested range starts past its end.",
                "range-not-satisfiable",
                headers={"Content-Range": f"bytes */{self.size}"},
                instance=scope.get("path"),
            )
            await problem(scope, receive, send)
            return
        start, end = span or (0, self.size)
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        headers.append((b"content-length", str(end - start).encode()))
        if span is not None:
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{self.size}".encode()))
        await send(
            {"type": "http.response.start", "status": 206 if span else 200, "headers": headers}
        )
        await anyio.to_thread.run_sync(self.file.seek, start)
        left = end - start
        while True:
            chunk = await anyio.to_thread.run_sync(self.file.read, min(CHUNK, left))
            left -= len(chunk)
            more = bool(chunk) and left > 0
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if not more:
                return
