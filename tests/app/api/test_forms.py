"""Multipart bodies as app/api/forms.py reads them (round 44 check of the API contract): an
RFC 2046 preamble is skipped, a body cut short is said to be cut short (it was "no 'file'
part"), and a text field that is not UTF-8 is not told to become a file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

PREDICT = "/v1/models/tiny/predict"
HEADERS = {"Content-Type": "multipart/form-data; boundary=XyZ"}


@pytest.fixture(scope="module")
def picture() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(out, "PNG")
    return out.getvalue()


def _part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--XyZ\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


@pytest.mark.parametrize(
    "preamble", [b"", b"\r\n", b"This is a multi-part message in MIME format.\r\n"]
)
def test_a_preamble_before_the_first_boundary_is_skipped(
    client: TestClient, picture: bytes, preamble: bytes
) -> None:
    body = preamble + _part("file", picture, "a.png") + b"--XyZ--\r\n"
    r = client.post(PREDICT, content=body, headers=HEADERS)
    assert r.status_code == 200, r.text


def test_a_body_with_no_boundary_at_all_is_still_a_400(client: TestClient) -> None:
    r = client.post(PREDICT, content=b"x" * 5000, headers=HEADERS)
    assert r.status_code == 400 and "could not be parsed" in r.json()["detail"]


def test_a_body_cut_short_is_said_to_be(client: TestClient, picture: bytes) -> None:
    for body in (_part("file", picture, "a.png")[:-2], _part("file", picture, "a.png") + b"--XyZ"):
        r = client.post(PREDICT, content=body, headers=HEADERS)
        assert r.status_code == 400, r.text
        assert "ended before its final" in r.json()["detail"]


def test_a_text_field_not_utf8_is_asked_for_in_utf8(client: TestClient, picture: bytes) -> None:
    body = _part("file", picture, "a.png") + _part("top_k", b"\xff\xfe") + b"--XyZ--\r\n"
    r = client.post(PREDICT, content=body, headers=HEADERS)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "not UTF-8 text (byte 0xff at 0)" in detail and "filename" not in detail
    # an image sent without a filename: its bytes are a file's, so the hint is the filename
    r = client.post(PREDICT, content=_part("file", picture) + b"--XyZ--\r\n", headers=HEADERS)
    assert r.status_code == 422 and "needs a filename" in r.json()["detail"]
