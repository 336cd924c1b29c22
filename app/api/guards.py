"""Request guards that run before any route reads a body: Host allow-list (DNS rebinding) and
no state change from a cross-site browser request (CSRF, including multipart "simple" POSTs).

Pure ASGI middleware, so a refused request is answered without touching its body.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import is_oip_path
from app.errors import PROBLEM_BASE, PROBLEM_JSON
from app.inflate import DECODED, codings

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths a probe (kubelet, Docker, a load balancer) may call by IP or service name.
PROBE_PATHS: Final = frozenset({"/healthz", "/readyz"})
IDENTITY: Final = frozenset({"identity"})
# The Open Inference Protocol's infer route inflates gzip/deflate bodies (tritonclient's
# request_compression_algorithm), bounded after inflating (app/api/v2.py).
OIP_CONTENT_CODINGS: Final = DECODED


def split_host(host: str) -> str:
    """'Example.com:8000' -> 'example.com', '[::1]:8000' -> '[::1]'."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# %2F and %5C in a path: decoded into separators before routing (RFC 3986 2.2: they are data)
_ENCODED_SEPARATOR: Final = re.compile(rb"%(?:2f|5c)", re.IGNORECASE)
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_PORT = re.compile(r"[0-9]{1,5}")


def host_syntax_ok(host: str) -> bool:
    """RFC 9110 7.2: `uri-host [ ":" port ]`, read strictly: a DNS name or IPv4 address (dot-
    separated labels of letters, digits, '-' and '_', no empty label) or a bracketed IPv6
    address, and a port of digits up to 65535. `localhost:8000@evil.com`, `evil.com#.localhost`
    or `..localhost` are not hosts (the allow-list once matched them on their first or last
    part)."""
    h = host.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        if end < 0:
            return False
        try:
            ipaddress.IPv6Address(h[1:end])
        except ValueError:
            return False
        rest = h[end + 1 :]
    else:
        name, colon, port = h.partition(":")
        if not _HOST_NAME.fullmatch(name):
            return False
        rest = colon + port
    if not rest:
        return True
    port = rest[1:]
    return rest[0] == ":" and bool(_PORT.fullmatch(port)) and int(port) <= 65535


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Exact names, '*.suffix' wildcards, or '*' for any host."""
    name = split_host(host)
    if not name:
        return False
    for pattern in patterns:
        p = pattern.strip().lower()
        if p == "*" or p == name:
            return True
        if p.startswith("*.") and name.endswith(p[1:]):
            return True
    return False


def is_loopback(host: str) -> bool:
    """Whether a listen address (IMGCLASS_HOST) reaches only this machine."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _origin_host(origin: str) -> str | None:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return parts.netloc.lower()


def coding_refusal(
    raw: Iterable[tuple[bytes, bytes]],
    content_codings: frozenset[str] | None = frozenset({"identity"}),
) -> tuple[int, str, str, str] | None:
    """(status, slug, title, detail) for a request body in a coding this server does not decode
    (it was read as raw bytes: "not an image"), or None. Transfer-Encoding: only `chunked`
    (RFC 9112 7; a 400 rather than the 501 the RFC suggests, since the client can fix it), for
    every method; Content-Encoding: only `content_codings` (RFC 9110 15.5.16: 415), None: not
    checked (a GET's body is never read)."""
    te = codings(v.decode("latin-1") for k, v in raw if k.lower() == b"transfer-encoding")
    ce = codings(v.decode("latin-1") for k, v in raw if k.lower() == b"content-encoding")
    if any(c != "chunked" for c in te):
        return (
            400,
            "unsupported-transfer-coding",
            "Transfer coding not supported",
            f"Transfer-Encoding {', '.join(te)!r} is not supported; only chunked is. Send the "
            "body uncompressed, with Content-Length or Transfer-Encoding: chunked.",
        )
    if content_codings is not None and any(c not in content_codings for c in ce):
        extra = sorted(content_codings - {"identity"})
        return (
            415,
            "unsupported-content-coding",
            "Content coding not supported",
            f"Content-Encoding {', '.join(ce)!r} is not supported here: send the body "
            + (
                f"uncompressed or as {' or '.join(extra)}."
                if extra
                else "uncompressed (JPEG, PNG and WebP are compressed already)."
            ),
        )
    return None


def repeated_query_name(query_string: bytes) -> str | None:
    """The first query parameter given more than once (`?top_k=1&top_k=9`), or None: no route
    takes a list, and "the last one wins" silently hid a client's mistake."""
    seen: set[str] = set()
    for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return name
        seen.add(name)
    return None


async def _problem(
    scope: Scope,
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: object,
) -> None:
    if is_oip_path(scope["path"]):  # the Open Inference Protocol's error shape
        doc: dict[str, object] = {"error": detail}
        media_type = "application/json"
    else:
        doc = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
        doc.update(extra)
        media_type = PROBLEM_JSON
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Refuse (400) a Host not on the allow-list, (422) a query parameter given twice,
    (400/415) a body in a transfer or content coding this server does not decode, and (403) a
    state-changing request that a browser marks as cross-site, before the route or its body is
    touched."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.any_host = "*" in allowed_hosts
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        refusal = self._host_refusal(scope, host)
        if refusal is not None:
            await _problem(scope, send, 400, "host-not-allowed", "Host not allowed", refusal)
            return
        # Probes take no parameters: a load balancer's cache-buster given twice is not an error.
        probe = scope["path"] in PROBE_PATHS
        repeated = None if probe else repeated_query_name(scope.get("query_string", b""))
        if repeated is not None:
            await _problem(
                scope,
                send,
                # A request-validation error: 400 on /v2, as its routes answer every other one.
                400 if is_oip_path(scope["path"]) else 422,
                "invalid-request",
                "Invalid request",
                f"query.{repeated[:64]}: given more than once; give each parameter once "
                "(no parameter takes a list).",
                instance=scope["path"],
                errors=[
                    {
                        "loc": ["query", repeated[:64]],
                        "msg": "given more than once",
                        "type": "repeated",
                    }
                ],
            )
            return
        if _ENCODED_SEPARATOR.search(scope.get("raw_path") or b""):
            await _problem(
                scope,
                send,
                400,
                "invalid-path",
                "Invalid path",
                "The path has an encoded '/' or '\\' (%2F or %5C). No model, catalog, item or "
                "job name contains one; a proxy's path rules would see another path than the "
                "routes.",
            )
            return
        accepted = None  # content codings: not checked (a GET's body is never read)
        if scope["method"] not in SAFE_METHODS:  # transfer codings only (round 16)
            accepted = OIP_CONTENT_CODINGS if is_oip_path(scope["path"]) else IDENTITY
        coding = coding_refusal(scope["headers"], accepted)
        if coding is not None:
            # RFC 9110 15.5.16: a 415 for a content coding says which are accepted
            said = ", ".join(sorted(accepted - IDENTITY) or IDENTITY) if accepted else ""
            more = [(b"accept-encoding", said.encode())] if coding[0] == 415 else []
            await _problem(scope, send, *coding, headers=more)
            return
        if scope["method"] not in SAFE_METHODS and self._cross_site(headers, host):
            await _problem(
                scope,
                send,
                403,
                "cross-site-request",
                "Cross-site request refused",
                "A request from another web site may not change or use this server. Call it "
                "from its own page, from a client without an Origin header, or list the "
                "site's origin in IMGCLASS_CORS_ORIGINS.",
            )
            return
        await self.app(scope, receive, send)

    def _host_refusal(self, scope: Scope, host: str) -> str | None:
        """Why this request's Host is refused (400), or None."""
        if sum(1 for k, _ in scope["headers"] if k.lower() == b"host") > 1:
            # RFC 9112 3.2: more than one Host line is a 400 (`host`, from a dict, is the
            # last one, which the allow-list alone would have checked).
            return "The request has more than one Host header; send exactly one."
        if host and not host_syntax_ok(host):
            return (
                "The Host header is not a host name or address with an optional port "
                "(RFC 9110 7.2), e.g. 'localhost:8000' or '[::1]:8000'."
            )
        probe = scope["path"] in PROBE_PATHS and scope["method"] in SAFE_METHODS
        if not self.any_host and not probe and not host_allowed(host, self.allowed_hosts):
            return (
                "This server answers only to the host names in IMGCLASS_ALLOWED_HOSTS "
                "(a guard against DNS rebinding); add the name you use to reach it."
            )
        return None

    def _cross_site(self, headers: dict[str, str], host: str) -> bool:
        origin = headers.get("origin")
        if origin is not None:
            if origin.rstrip("/").lower() in self.allowed_origins:
                return False
            # "null" (sandboxed frames, file://) and any other host is cross-origin.
            return _origin_host(origin) != host.strip().lower()
        # Browsers that omit Origin still send Sec-Fetch-Site on fetches and form posts.
        return headers.get("sec-fetch-site", "").lower() == "cross-site"
