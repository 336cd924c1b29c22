"""app.oip_json: an infer request's JSON part. Binary data sent without its
Inference-Header-Content-Length is named as such (round 43: a JPEG was said to hold "292 JSON
objects", a PNG to be JSON that "can't decode byte 0xfe"), and braces inside strings do not
count towards the objects a request may hold."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from app.errors import BadRequest
from app.oip_json import MAX_JSON_OBJECTS, load_header


def _image(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_binary_data_after_the_json_part_names_the_missing_header(fmt: str) -> None:
    data = _image(fmt)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(data) + 4},
            }
        ]
    }
    body = json.dumps(header).encode() + len(data).to_bytes(4, "little") + data
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length header gives the JSON"):
        load_header(body)


def test_braces_inside_strings_are_not_objects() -> None:
    request = {"id": "{" * (MAX_JSON_OBJECTS + 50), "inputs": [{"name": "image"}]}
    assert load_header(json.dumps(request).encode()) == request
    escaped = {"id": '\\"{' * (MAX_JSON_OBJECTS + 50), "inputs": []}
    assert load_header(json.dumps(escaped).encode()) == escaped


def test_a_flood_of_objects_is_still_refused() -> None:
    flood = b"[" + b"{}," * (MAX_JSON_OBJECTS + 1) + b"{}]"
    with pytest.raises(BadRequest, match=f"holds {MAX_JSON_OBJECTS + 2:,} JSON objects"):
        load_header(flood)
    # a string left open does not hide the braces after it
    with pytest.raises(BadRequest, match="JSON objects"):
        load_header(b'["' + b"{}," * (MAX_JSON_OBJECTS + 1))
    with pytest.raises(BadRequest, match="not valid JSON"):
        load_header(b'{"inputs": [}')


def test_an_integer_too_long_for_python_is_named_without_its_internals() -> None:
    """Round 44: the answer quoted Python's own advice (`sys.set_int_max_str_digits()`)."""
    body = b'{"inputs": [{"name": "image", "shape": [' + b"9" * 5000 + b"]}]}"
    with pytest.raises(BadRequest, match="integer of more than 4,300 digits") as err:
        load_header(body)
    assert "sys." not in str(err.value)
