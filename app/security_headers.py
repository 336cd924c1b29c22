"""Browser-hardening headers on every answer (pure ASGI, outermost: refusals get them too).

- `X-Content-Type-Options: nosniff`: a browser takes every answer as the type it is sent as
  (problem+json that echoes client text is never sniffed into HTML, a stored image never into a
  page).
- `Content-Security-Policy`: the page loads only its own scripts, styles, images and API
  (`blob:` for previews of the files a user picks), and no other site may frame it
  (`frame-ancestors 'self'`, also `X-Frame-Options` for older browsers): a hostile page cannot
  overlay the Train or upload controls. The API docs at /docs are held to the same policy: they
  run this server's own copy of Swagger UI, with no inline code (app/api/api_docs.py).
- `Referrer-Policy: no-referrer`: catalog and model names in URLs do not leak to other sites.
- `Cache-Control` where the route set none: `no-store` for API answers (model lists, jobs,
  metrics, predictions: live state, and with a key configured possibly a key holder's
  details), `no-cache` for answers a validator lets a cache check (an ETag or Last-Modified).
  With a key configured, answers also say `Vary: X-API-Key, Authorization` and `private`:
  RFC 9111 3.5 keeps shared caches from storing answers to requests with `Authorization`
  only, not `X-API-Key` (round 26).

A header the route already set is left as it is.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)


def _headers(policy: str) -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"referrer-policy", b"no-referrer"),
    )


PAGE_HEADERS: Final = _headers(PAGE_POLICY)  # built once: this wraps the predict hot path too


_VARY: Final = b"X-API-Key, Authorization"


def cache_headers(present: dict[bytes, bytes], keyed: bool) -> list[tuple[bytes, bytes]]:
    """The caching headers to add to an answer with these headers (names lower case)."""
    added = []
    if b"cache-control" not in present:
        validated = b"etag" in present or b"last-modified" in present
        policy = b"no-cache" if validated else b"no-store"
        added.append((b"cache-control", b"private, " + policy if keyed else policy))
    if keyed:
        vary = present.get(b"vary")
        added.append((b"vary", _VARY if not vary else vary + b", " + _VARY))
    return added


class SecurityHeaders:
    def __init__(self, app: ASGIApp, keyed: bool = False) -> None:
        self.app = app
        self.keyed = keyed  # an API key is configured: answers may differ by key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = PAGE_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower(): value for name, value in headers}
                if self.keyed:  # every Vary line, merged into one below
                    varies = [v for k, v in headers if k.lower() == b"vary"]
                    present[b"vary"] = b", ".join(varies)
                    headers = [(k, v) for k, v in headers if k.lower() != b"vary"]
                headers += [(k, v) for k, v in extra if k not in present]
                headers += cache_headers(present, self.keyed)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
