"""The browser page's files (app/static) as served: `/` (index.html) and `/static/...`; also
/docs (api-docs.html) and Swagger UI's two files at `/static/swagger/` (app/api/api_docs.py).

Both go through Starlette's StaticFiles, so `/` answers If-None-Match and If-Modified-Since with
304 like every asset (it was a plain FileResponse that ignored them). Range headers are
ignored, as RFC 9110 14.2 lets a server do: the files are a few KB, and Starlette answered a
malformed or unsatisfiable range (`bytes=9-0`, `items=0-5`) with a text/plain 400 or 416
instead of problem+json (fuzz round 16). So no `Accept-Ranges: bytes` is sent either.

Every answer carries a validator, so app/security_headers.py adds `Cache-Control: no-cache`
(`private, no-cache` with a key configured): after an upgrade a browser must never run a cached
app.js against a new index.html (or the reverse); each check is a 304 while nothing changed.
StaticFiles does not evaluate If-Match or If-Unmodified-Since; `_check_preconditions` does
(RFC 9110 13.1.1, 13.1.4), with a 412 problem when they fail.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path

import anyio.to_thread
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from app.api.stored_file import PreconditionFailed, check_if_match

_RANGE = (b"range", b"if-range")


def _without_range(scope: Scope) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _RANGE]
    return {**scope, "headers": headers}


async def _check_preconditions(files: StaticFiles, scope: Scope) -> None:
    """412 problem when If-Match, or else If-Unmodified-Since, fails for the file to be sent.
    Left to StaticFiles when it will answer something else (404, 405): the conditions are
    then ignored (RFC 9110 13.2.1)."""
    request = Headers(scope=scope)
    match, since = request.get("if-match"), request.get("if-unmodified-since")
    if (match is None and since is None) or scope["method"] not in ("GET", "HEAD"):
        return
    try:
        full, found = await anyio.to_thread.run_sync(files.lookup_path, files.get_path(scope))
    except OSError:
        return
    if found is None or not stat.S_ISREG(found.st_mode):
        return
    if match is not None:  # If-Unmodified-Since is then not evaluated (13.1.4)
        etag = FileResponse(full, stat_result=found).headers["etag"]  # the one to be sent
        check_if_match(match, etag, "this file")
    elif since is not None and _modified_after(found, since):
        raise PreconditionFailed("The file was modified after the If-Unmodified-Since date.")


def _modified_after(found: os.stat_result, since: str) -> bool:
    """Whether the file changed after `since`; False for a value that is not an HTTP-date
    (ignored, RFC 9110 13.1.4): GMT, or the asctime form, which names no zone."""
    try:
        date = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    asctime = since.strip()[3:4] == " "  # "Sun Nov  6 08:49:37 1994"
    if not since.rstrip().endswith(" GMT") and not (asctime and date.tzinfo is None):
        return False
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    return int(found.st_mtime) > date.timestamp()  # Last-Modified has whole seconds


def _no_accept_ranges(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            message = {**message, "headers": [h for h in headers if h[0] != b"accept-ranges"]}
        await send(message)

    return wrapped


async def _serve(files: StaticFiles, scope: Scope, receive: Receive, send: Send) -> None:
    scope = _without_range(scope)
    await _check_preconditions(files, scope)
    await files(scope, receive, _no_accept_ranges(send))


class PageAssets:
    """The ASGI app mounted at `/static`; `index` is the one routed at `/` (index.html).
    With `only`, just those file names are served (404 for the rest of the folder)."""

    def __init__(
        self, directory: Path, index: str = "index.html", only: frozenset[str] | None = None
    ) -> None:
        self.files = StaticFiles(directory=directory)
        self.index = _Index(self.files, "/" + index)
        self.only = only

    def alias(self, name: str) -> _Index:
        """An ASGI app serving the file `name` of the folder at another path (`/favicon.ico`,
        which browsers ask for on every page without a <link rel=icon>, JSON answers too)."""
        return _Index(self.files, "/" + name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.only is not None and self.files.get_path(scope) not in self.only:
            raise HTTPException(status_code=404)
        if str(scope["path"]).endswith("/"):  # `/static/app.js/` was served as app.js
            raise HTTPException(status_code=404)
        await _serve(self.files, scope, receive, send)


class _Index:
    """`/` as StaticFiles serves `/index.html` (an ASGI app, not a route function: the Range
    header must be gone from the scope the file response itself is sent with)."""

    def __init__(self, files: StaticFiles, path: str) -> None:
        self.files = files
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = {**scope, "path": self.path, "raw_path": self.path.encode()}
        await _serve(self.files, scope, receive, send)
