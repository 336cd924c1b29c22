"""Send a stored image (catalog originals and thumbnails) from a file opened before the answer
starts: a delete that lands meanwhile cannot cut the body short (an unlinked file stays
readable through its open descriptor), and every error is problem+json.

Byte ranges: one range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) gets 206; a range past the end
gets 416 problem+json with `Content-Range: bytes */size`; a malformed header or several ranges
are ignored and the whole file is sent (RFC 9110 section 14.2 lets a server ignore Range).
`If-Range` (RFC 9110 section 13.1.5): the range is honoured only when it names this file's
ETag, compared strongly; a weak tag, another tag or a date (no Last-Modified is sent) gets the
whole file, so a client resuming a download never splices two different images.
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
from app.errors import NotFound

CHUNK: Final = 64 * 1024
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})", re.IGNORECASE)  # units: RFC 9110 14.1


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
        n = int(m[2])
        if n == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size
    start = int(m[1])
    end = size if not m[2] else int(m[2]) + 1
    if m[2] and end <= start:
        return None  # last before first: an invalid range spec, ignored
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(end, size)


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


def open_stored(path: Path, what: str) -> BinaryIO:
    """The file, open; 404 problem when it is gone (blocking: call it in a worker thread)."""
    try:
        return path.open("rb")
    except (FileNotFoundError, IsADirectoryError) as exc:
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
