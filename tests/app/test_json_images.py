"""app.json_images: base64 images in a JSON body. What clients send besides strict base64 is
taken (line breaks do not count against the size limit), a string longer than any image at the
limit is refused before the body is parsed, and decoding makes no copy of the text."""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from app.errors import InvalidRequest, PayloadTooLarge
from app.json_images import load_images, parse_images
from tests.conftest import make_settings


def _settings(tmp_path: Path, limit: int) -> object:
    return make_settings(tmp_path / "models", tmp_path, max_image_bytes=limit)


def _load(body: bytes, tmp_path: Path, limit: int) -> list[bytes]:
    settings = _settings(tmp_path, limit)
    entries = parse_images(body, settings)  # type: ignore[arg-type]
    return [i.data for i in load_images(entries, settings)]  # type: ignore[arg-type]


def test_line_breaks_do_not_count_against_the_limit(tmp_path: Path) -> None:
    """MIME base64 of an image 10 bytes under the limit is longer, with its line breaks, than
    base64 of the limit (it was refused as over the limit)."""
    data = os.urandom(2990)
    body = json.dumps({"images": [{"b64": base64.encodebytes(data).decode()}]}).encode()
    assert _load(body, tmp_path, 3000) == [data]


def test_an_image_at_the_limit_passes_the_check_before_parsing(tmp_path: Path) -> None:
    """Written as some clients write it: CRLF line breaks and slashes escaped in the JSON."""
    data = os.urandom(30_000)
    text = base64.encodebytes(data).decode().replace("\n", "\r\n")
    body = json.dumps({"images": [{"b64": "data:image/png;base64," + text}]})
    body = body.replace("/", "\\/")
    assert _load(body.encode(), tmp_path, 30_000) == [data]
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert _load(json.dumps({"images": [{"b64": urlsafe}]}).encode(), tmp_path, 30_000) == [data]


def test_a_string_too_long_for_any_image_is_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 28 MiB body of one string was parsed (+90-160 MiB on a worker) only to be refused."""

    def no_parsing(raw: bytes) -> object:
        raise AssertionError("parsed")

    monkeypatch.setattr("app.json_images.loads_strict", no_parsing)
    # 5% over: 31,500 bytes once decoded (round 36's 28 MiB body against 20 MiB was 5% over)
    body = b'{"images": [{"b64": "' + b"A" * 42_000 + b'"}]}'
    with pytest.raises(PayloadTooLarge) as raised:
        parse_images(body, _settings(tmp_path, 30_000))  # type: ignore[arg-type]
    assert "a string of 42,000 characters" in raised.value.detail
    assert "takes at most 40,000" in raised.value.detail
    assert "multipart/form-data" in raised.value.detail


def test_over_the_limit_after_parsing_is_still_a_413(tmp_path: Path) -> None:
    text = base64.b64encode(os.urandom(30_100)).decode()  # within the slack before parsing
    with pytest.raises(PayloadTooLarge):
        _load(json.dumps({"images": [{"b64": text}]}).encode(), tmp_path, 30_000)
    with pytest.raises(InvalidRequest, match="base64 alphabet"):
        _load(b'{"images": [{"b64": "aGk=aGk="}]}', tmp_path, 30_000)
    with pytest.raises(InvalidRequest, match="base64 alphabet"):
        _load('{"images": [{"b64": "aGké"}]}'.encode(), tmp_path, 30_000)


def test_decoding_makes_no_copy_of_the_text(tmp_path: Path) -> None:
    """base64.b64decode encoded the str to ASCII bytes first: a second copy of up to 27 MB."""
    data = os.urandom(6_000_000)
    body = json.dumps({"images": [{"b64": base64.b64encode(data).decode()}]}).encode()
    settings = _settings(tmp_path, 20_000_000)
    entries = parse_images(body, settings)  # type: ignore[arg-type]
    del body
    tracemalloc.start()
    try:
        images = load_images(entries, settings)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert images[0].data == data
    assert peak < len(data) + 1_000_000, peak  # the decoded bytes, not the 8 MB text again
    assert entries == [{}], "each text is let go once decoded"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"images": "abc"}', "'images' must be a list, not a string"),
        (b'{"images": {"b64": "x"}}', "'images' must be a list, not an object"),
        (b'{"images": NaN}', "NaN is not a JSON value"),
        (b'{"images": [], "top_k": 3}', "one key, 'images'"),
    ],
)
def test_the_answer_names_what_is_wrong_with_the_shape(
    tmp_path: Path, body: bytes, said: str
) -> None:
    """Round 44: `{"images": "abc"}` was told to be "an object with one key, 'images'", which
    it is; NaN (not JSON) was taken by Python's parser and then refused the same way."""
    with pytest.raises(InvalidRequest, match=said):
        _load(body, tmp_path, 4096)
