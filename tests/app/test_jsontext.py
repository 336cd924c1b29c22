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
