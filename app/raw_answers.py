"""Answers written straight to a connection, before or instead of the app: a head too large
or too slow (app/http_guard.py), bytes that are not HTTP/1.1.

They take the app's error shapes: problem+json, or `{"error": "..."}` when the request line
names an Open Inference Protocol path (/v2...), whose clients read that key (round 24:
tritonclient reported "an exception occurred in the client while decoding the response:
'error'" for a 431 to a 70 KB model name). The path is read from the first bytes of the head,
which is all a refused request may have sent.
"""

from __future__ import annotations

import asyncio
import json
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

from app.errors import PROBLEM_JSON, ServiceError
from app.security_headers import PAGE_HEADERS

HEAD_START_BYTES: Final = 256  # kept of each head, enough for a method and "/v2/"


def request_path(head_start: bytes) -> str:
    """The target of the request line these bytes begin ("" when there is none yet)."""
    line = head_start.lstrip(b"\r\n").split(b"\r\n", 1)[0]  # empty lines may lead (RFC 9112 2.2)
    parts = line.split(b" ", 2)
    if len(parts) < 2:
        return ""
    target = parts[1].decode("latin-1")
    if "://" in target:  # absolute form: http://host/path
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    return target


def answer_bytes(error: ServiceError, head_start: bytes = b"") -> bytes:
    path = request_path(head_start)
    if path == "/v2" or path.startswith(("/v2/", "/v2?")):
        body, media = json.dumps({"error": error.detail}).encode(), "application/json"
    else:
        body, media = json.dumps(error.to_problem()).encode(), PROBLEM_JSON
    reason = HTTPStatus(error.status).phrase.encode()
    # what every answer of the app carries: Date (RFC 9110 6.6.1), the hardening headers
    headers = [
        (b"date", formatdate(usegmt=True).encode()),
        (b"content-type", media.encode()),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
        *PAGE_HEADERS,
        (b"connection", b"close"),
    ]
    lines = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (error.status, reason, lines) + body


def close_with(transport: asyncio.Transport, error: ServiceError, head_start: bytes = b"") -> None:
    """Answer `error` in the app's shape for the request's path and close the connection."""
    if transport.is_closing():
        return
    transport.write(answer_bytes(error, head_start))
    transport.close()
