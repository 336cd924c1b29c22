"""app/raw_answers.py: the guard's own answers take the shape of the path they answer."""

from __future__ import annotations

import json

import pytest

from app.errors import HeadersTooLarge
from app.raw_answers import answer_bytes, request_path


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
