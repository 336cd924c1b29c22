"""app.jsontext: unpaired surrogates in parsed JSON are found, wherever they sit."""

from __future__ import annotations

import json

import pytest

from app.jsontext import lone_surrogate_at


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b'{"a": "\\ud800"}', "$.a"),
        (b'{"a": [1, 2.5, {"b": "x\\udfffy"}]}', "$.a[2].b"),
        (b'{"\\udc00": 1}', "$"),  # a key: reported as its object
        (b'["\xed\xa0\x80"]', "$[0]"),  # UTF-8 bytes of a surrogate (json.loads lets them in)
        ('{"a": "\\ud800"}', "$.a"),  # text, as a form field arrives
        ('["\ud800"]'.encode("utf-16", "surrogatepass"), "$[0]"),  # UTF-16: always walked
    ],
)
def test_found_with_its_path(raw: bytes | str, where: str) -> None:
    text = raw.decode("utf-16", "surrogatepass") if raw[:2] == b"\xff\xfe" else raw
    assert lone_surrogate_at(raw, json.loads(text)) == where


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "\\ud83d\\ude00", "b": "\xf0\x9f\x98\x80", "c": [1, null, true]}',  # pairs
        b'{"a": "\\u00e9\\u20ac", "d800": "ud800"}',
        b"[]",
    ],
)
def test_valid_text_passes(raw: bytes) -> None:
    assert lone_surrogate_at(raw, json.loads(raw)) is None


def test_a_long_key_is_cut_in_the_path() -> None:
    raw = json.dumps({"k" * 500: {"x": "LONE"}}).replace("LONE", "\\ud800").encode()
    where = lone_surrogate_at(raw, json.loads(raw))
    assert where == "$." + "k" * 40 + ".x"


def test_stored_documents_read_back_with_replacement_characters() -> None:
    from app.jsontext import stored_json

    stored = json.dumps({"a": "LONE", "b": "\U0001f600", "LONE": [1, "x"]})  # as SQLite holds it
    got = stored_json(stored.replace("LONE", "\\ud800"))
    assert got == {"a": "\ufffd", "b": "\U0001f600", "\ufffd": [1, "x"]}
    json.dumps(got, ensure_ascii=False).encode("utf-8")  # every answer can carry it now
    assert stored_json('{"n": 1}') == {"n": 1}


@pytest.mark.parametrize(
    ("raw", "key", "where"),
    [
        ('{"a": 1, "a": 2}', "a", "$"),
        ('{"items": [{"x": 1}, {"m": {"k": 1, "k": 1}}]}', "k", "$.items[1].m"),
        ('[{"\\ud800": 1, "\\ud800": 2}]', "\ud800", "$[0]"),
        ('{"a b": [[{"q": [], "q": {}}]]}', "q", "$.a b[0][0]"),
    ],
)
def test_a_repeated_key_is_refused_with_its_path(raw: str, key: str, where: str) -> None:
    from app.jsontext import RepeatedKey, loads_unique, repeated_key_message

    with pytest.raises(RepeatedKey) as info:
        loads_unique(raw)
    assert (info.value.key, info.value.path) == (key, where)
    message = repeated_key_message("The body", info.value)
    message.encode("utf-8")  # an unpaired surrogate key is shown escaped
    assert "more than once" in message and f"(at {where}." in message


def test_unique_keys_parse_as_json_loads_does() -> None:
    from app.jsontext import loads_unique

    raw = '{"a": {"b": 1, "c": [1, {"b": 2}]}, "b": {"a": {}}, "n": [1.5, null, true, "s"]}'
    assert loads_unique(raw) == json.loads(raw)
    assert loads_unique(b"[]") == []


def test_the_inference_protocol_refuses_a_repeated_key_in_its_own_shape() -> None:
    """OIP /v2 has its own parser and error (a 400 {"error": ...}); a second "data" won."""
    from app.errors import BadRequest
    from app.oip import parse_infer_request

    body = b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1], "data": [2]}]}'
    with pytest.raises(BadRequest) as info:
        parse_infer_request(body, None, max_json_bytes=len(body), max_elements=10, max_files=32)
    assert "'data' more than once (at $.inputs[0].data)" in str(info.value.detail)
