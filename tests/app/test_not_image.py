"""What a 415 says about an upload that is not an image (app/not_image.py through
app.imaging.prepare): videos and audio told apart, zip archives named. HEIC photos are
images since round 39 (tests/app/test_heif.py)."""

from __future__ import annotations

import pytest

from app.bundle import InputSpec
from app.errors import UnsupportedMediaType
from app.imaging import ImageLimits, prepare
from app.not_image import describe

RGB = InputSpec(height=8, width=8, channels=3, color="rgb")


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\0" * 64


def _detail(data: bytes) -> str:
    with pytest.raises(UnsupportedMediaType) as raised:
        prepare(data, RGB, ImageLimits())
    return raised.value.detail


@pytest.mark.parametrize(
    "data",
    [_ftyp(b"isom", b"iso2", b"mp41"), _ftyp(b"qt  "), b"RIFF\0\0\0\0AVI LIST" + b"\0" * 40],
    ids=["mp4", "mov", "avi"],
)
def test_videos_are_said_to_be_videos(data: bytes) -> None:
    detail = _detail(data)
    assert "videos are not accepted" in detail and "photo" not in detail, detail
    assert detail.count(" not ") == 1, detail


@pytest.mark.parametrize(
    "data", [b"PK\x03\x04" + b"\0" * 40, b"PK\x05\x06" + b"\0" * 18], ids=["zip", "empty zip"]
)
def test_a_zip_is_named_a_zip(data: bytes) -> None:
    """Both a zip with entries and an empty one were 'unrecognised binary data'."""
    detail = _detail(data)
    assert detail.startswith(
        "The upload is a zip archive; zip archives are not images, send the images themselves."
    ), detail


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"\x00", "unrecognised binary data"),
        (b"notes.txt\x00\x00\x00\x00ustar", "unrecognised binary data"),  # a TAR
        (b"\x00\x00\x01\x00\x01\x00\x10\x10", "unrecognised binary data"),  # an ICO
        ("é".encode() * 128 + b"\xc3", "text"),  # a character cut at 256 bytes is still text
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom", "audio file"),
    ],
)
def test_round_25_binary_files_are_not_called_text(head: bytes, said: str) -> None:
    """NUL and other control characters are valid UTF-8: TAR, ICO, PSD and RAR files and a
    lone NUL byte were "text"; M4A audio was "a video"."""
    assert said in describe(head)


@pytest.mark.parametrize("body", [b'{"images": [{"b64": "..."}]}', b'\n  [{"url": "x"}]'])
def test_json_sent_as_an_upload_names_the_missing_header(body: bytes) -> None:
    """Round 29: `curl -d '{"images": ...}'` (form-encoded by default) got "The upload is
    text", with no hint that the JSON needed `Content-Type: application/json`."""
    detail = _detail(body)
    assert detail.startswith(
        "The upload is JSON text sent without `Content-Type: application/json`"
    )
    assert describe(b"shopping list\n") == "The upload is text, not an image."
