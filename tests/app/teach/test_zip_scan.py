"""app.teach.zip_scan: a zip upload's image headers are read with decode's structure checks
first (round 43: a 1.4 MB zip of six files that predict refuses from their structure, 3.5
million JPEG segments or 1.6 million PNG chunks, took 19 s of CPU and +400 MiB while their
headers were read with Pillow alone)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from PIL import Image

from app.errors import PayloadTooLarge
from app.imaging import ImageLimits, prepare
from app.teach import zip_scan
from tests.app.test_decode_guard import RGB
from tests.images import encode, png_chunk


def _zip(entries: dict[str, bytes]) -> zipfile.ZipFile:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return zipfile.ZipFile(io.BytesIO(out.getvalue()))


def _jpeg_with_segments(n: int) -> bytes:
    jpeg = encode(Image.new("RGB", (64, 48), (20, 90, 200)), "JPEG")
    return jpeg[:2] + b"\xff\xfe\x00\x02" * n + jpeg[2:]  # n empty comment segments


def _png_with_chunks(n: int) -> bytes:
    png = encode(Image.new("RGB", (64, 48), (20, 90, 200)), "PNG")
    return png[:33] + png_chunk(b"abCd", b"") * n + png[33:]  # after IHDR


@pytest.mark.parametrize("data", [_jpeg_with_segments(300_000), _png_with_chunks(300_000)])
def test_an_entry_decode_refuses_from_its_structure_is_never_parsed_by_pillow(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PayloadTooLarge):  # what decode says of it (the entry's skip reason)
        prepare(data, RGB, ImageLimits())
    opened: list[Any] = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or 1 / 0)
    zf = _zip({"birds/a.bin": data})
    assert zip_scan.header_pixels(zf, zf.infolist()[0], 20 << 20) == 0
    assert opened == []


def test_ordinary_entries_declare_their_pixels() -> None:
    small = _jpeg_with_segments(3)
    zf = _zip({"a/1.jpg": small, "a/2.png": _png_with_chunks(2)})
    assert [zip_scan.header_pixels(zf, i, 20 << 20) for i in zf.infolist()] == [64 * 48] * 2
