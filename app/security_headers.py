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


_PAGE_HEADERS: Final = _headers(PAGE_POLICY)  # built once: this wraps the predict hot path too


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _PAGE_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
