"""The browser page's files (app/static) as served: `/` (index.html) and `/static/...`; also
/docs (api-docs.html) and Swagger UI's two files at `/static/swagger/` (app/api/api_docs.py).

Both go through Starlette's StaticFiles, so `/` answers If-None-Match and If-Modified-Since with
304 like every asset (it was a plain FileResponse that ignored them). Range headers are
ignored, as RFC 9110 14.2 lets a server do: the files are a few KB, and Starlette answered a
malformed or unsatisfiable range (`bytes=9-0`, `items=0-5`) with a text/plain 400 or 416
instead of problem+json (fuzz round 16).
"""

from __future__ import annotations

from pathlib import Path

from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

_RANGE = (b"range", b"if-range")


def _without_range(scope: Scope) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _RANGE]
    return {**scope, "headers": headers}


class PageAssets:
    """The ASGI app mounted at `/static`; `index` is the one routed at `/` (index.html).
    With `only`, just those file names are served (404 for the rest of the folder)."""

    def __init__(
        self, directory: Path, index: str = "index.html", only: frozenset[str] | None = None
    ) -> None:
        self.files = StaticFiles(directory=directory)
        self.index = _Index(self.files, "/" + index)
        self.only = only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.only is not None and self.files.get_path(scope) not in self.only:
            raise HTTPException(status_code=404)
        if str(scope["path"]).endswith("/"):  # `/static/app.js/` was served as app.js
            raise HTTPException(status_code=404)
        await self.files(_without_range(scope), receive, send)


class _Index:
    """`/` as StaticFiles serves `/index.html` (an ASGI app, not a route function: the Range
    header must be gone from the scope the file response itself is sent with)."""

    def __init__(self, files: StaticFiles, path: str) -> None:
        self.files = files
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = _without_range({**scope, "path": self.path, "raw_path": self.path.encode()})
        await self.files(scope, receive, send)
