"""app/raw_answers.py: the guard's own answers take the shape of the path they answer."""

from __future__ import annotations

import json
import logging
from email.utils import parsedate_to_datetime

import pytest

from app.errors import HeadersTooLarge
from app.log_format import request_id_var
from app.logs import access_logger
from app.raw_answers import answer_bytes, request_path
from app.security_headers import PAGE_POLICY


@pytest.mark.parametrize(
    ("head", "path"),
    [
        (b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\n", "/v2/models/m"),
        (b"\r\n\r\nPOST /v2/models/m/infer HTTP/1.1\r\n", "/v2/models/m/infer"),  # round 25
        (b"GET http://h:8000/v2/health/ready HTTP/1.1\r\n", "/v2/health/ready"),
        (b"GET http://h:8000 HTTP/1.1\r\n", "/"),
        (b"OPTIONS * HTTP/1.1\r\n", "*"),
        (b"GARBAGE\r\n", ""),
        (b"", ""),
        (b"GET /\xff\xfe HTTP/1.1\r\n", "/\xff\xfe"),
    ],
)
def test_the_path_is_read_from_the_request_line(head: bytes, path: str) -> None:
    assert request_path(head) == path


@pytest.mark.parametrize(
    ("head", "oip"),
    [(b"GET /v2 HTTP/1.1", True), (b"GET /v2?x HTTP/1.1", True), (b"GET /v20 HTTP/1.1", False)],
)
def test_v2_answers_are_the_protocols_error_and_others_problems(head: bytes, oip: bool) -> None:
    raw = answer_bytes(HeadersTooLarge("too large", limit_bytes=10), head)
    status, _, rest = raw.partition(b"\r\n")
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert (set(body) == {"error"}) is oip and body.get("detail", body.get("error")) == "too large"


def test_raw_answers_carry_a_date_and_the_hardening_headers() -> None:
    """Round 26: a 400/408/431 written by the connection guard had no Date (RFC 9110 6.6.1: a
    MUST on 4xx) and none of the headers every other answer has."""
    raw = answer_bytes(HeadersTooLarge("too large", limit_bytes=10), b"GET / HTTP/1.1")
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    headers = dict(line.split(": ", 1) for line in head)
    assert parsedate_to_datetime(headers["date"]).tzinfo is not None
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == PAGE_POLICY
    assert headers["cache-control"] == "no-store" and headers["connection"] == "close"
    assert int(headers["content-length"]) == len(raw.partition(b"\r\n\r\n")[2])


def test_raw_answers_get_an_access_log_line_under_their_request_id() -> None:
    """Round 44: a 400/408/431 written by the connection guard was counted in /metrics and
    carried an X-Request-ID, but had no log line: the id a client quoted was nowhere."""
    seen: list[tuple[str, int, str, str]] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage(), record.status, record.path, request_id_var.get()))  # type: ignore[attr-defined]

    catch = Catch()
    access_logger.addHandler(catch)
    level, disabled = access_logger.level, access_logger.disabled
    access_logger.setLevel(logging.INFO)
    access_logger.disabled = False  # as an app with IMGCLASS_ACCESS_LOG on leaves it
    try:
        raw = answer_bytes(
            HeadersTooLarge("too large", limit_bytes=10), b"PUT /v1/x?key=s HTTP/1.1"
        )
    finally:
        access_logger.removeHandler(catch)
        access_logger.setLevel(level)
        access_logger.disabled = disabled
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    rid = dict(line.split(": ", 1) for line in head)["x-request-id"]
    assert len(seen) == 1
    message, status, path, logged_id = seen[0]
    assert status == 431 and path == "/v1/x" and "key=s" not in message  # no query: no key
    assert message.startswith("PUT /v1/x 431") and logged_id == rid
