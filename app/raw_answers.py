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
import uuid
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

from app.errors import PROBLEM_JSON, ServiceError
from app.security_headers import PAGE_HEADERS

HEAD_START_BYTES: Final = 256  # kept of each head, enough for a method and "/v2/"


def _request_line(head_start: bytes) -> list[bytes]:
    line = head_start.lstrip(b"\r\n").split(b"\r\n", 1)[0]  # empty lines may lead (RFC 9112 2.2)
    return line.split(b" ", 2)


def request_method(head_start: bytes) -> str:
    """The method of the request line these bytes begin ("" when there is none)."""
    return _request_line(head_start)[0].decode("latin-1")[:16]


def request_path(head_start: bytes) -> str:
    """The target of the request line these bytes begin ("" when there is none yet)."""
    parts = _request_line(head_start)
    if len(parts) < 2:
        return ""
    target = parts[1].decode("latin-1")
    if "://" in target:  # absolute form: http://host/path
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    return target


def answer_bytes(error: ServiceError, head_start: bytes = b"") -> bytes:
    """The answer, with a fresh X-Request-ID as every answer has, counted in /metrics as a
    request refused before routing (round 31: neither was done for these) and given its
    access log line (round 44: counted, but nowhere in the log)."""
    # Imported here: `python -m app` imports this module before it sets up the metrics folder
    # of several workers, and telemetry creates its metrics (files there) on import.
    from app import telemetry
    from app.logs import UNMATCHED, log_access, logging_as, method_label

    request_id = uuid.uuid4().hex
    method = request_method(head_start)
    telemetry.observe_request(UNMATCHED, method_label(method), "", error.status, 0.0)
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
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
    ]
    lines = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    with logging_as(request_id):  # the path without its query (which may hold a key)
        log_access(method, path.partition("?")[0], UNMATCHED, "", error.status, 0.0, 0, len(body))
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (error.status, reason, lines) + body


def close_with(transport: asyncio.Transport, error: ServiceError, head_start: bytes = b"") -> None:
    """Answer `error` in the app's shape for the request's path and close the connection."""
    if transport.is_closing():
        return
    transport.write(answer_bytes(error, head_start))
    transport.close()
