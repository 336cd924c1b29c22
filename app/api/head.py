"""HEAD on every GET route (RFC 9110 9.3.2): the same status and headers as a GET, no body.

FastAPI registers GET routes without HEAD, so `curl -I`, link checkers and probes that use
HEAD got 405. Pure ASGI: the routes see a GET; the layers outside this one (access log,
metrics, guards) still see HEAD, and the body the route sends is dropped here, so the
Content-Length (or Content-Range) still says what a GET would send.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False
        inner = {**scope, "method": "GET"}

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                _route_back(inner, scope)
            if message["type"] != "http.response.body":
                await send(message)
            elif not ended:  # one empty, final body; whatever the route streams after is dropped
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await self.app(inner, receive, headers_only)
        finally:
            _route_back(inner, scope)


def _route_back(inner: Scope, outer: Scope) -> None:
    """The route the router matched, on the scope the layers outside see: metrics and the
    access log label a HEAD by its route template, not as `<unmatched>` (round 31)."""
    for key in ("route", "endpoint", "path_params"):
        if key in inner:
            outer[key] = inner[key]
