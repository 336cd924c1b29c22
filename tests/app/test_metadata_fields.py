"""Metadata fields holding absurd numbers of values are never turned into Python objects
value by value (round 43): a 20 MB upload whose TIFF XResolution, or whose EXIF orientation
(PNG eXIf, WebP EXIF, AVIF Exif item), held 2.5 million RATIONALs took a worker up by
700 MiB and 8 s. A TIFF is refused from its structure (app/decode_guard.py), an AVIF too
(Pillow's reader decodes the orientation as it opens it: app/formats.py), and elsewhere the
orientation is reported `invalid` without being decoded (app/exif.py)."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from PIL import Image

from app.decode_guard import MAX_TIFF_FIELD_BYTES, check_tiff_strips
from app.errors import PayloadTooLarge
from app.exif import orientation_values
from app.formats import MAX_EXIF_ORIENTATION_VALUES
from app.imaging import prepare
from tests.app.test_decode_guard import LIMITS, RGB
from tests.images import encode, exif_payload, orientation_entry, png_with_exif_chunk, short

RATIONAL, SHORT = 5, 3


def _tiff_with_field(tag: int, kind: int, count: int) -> bytes:
    """A 64x64 RGB TIFF whose first page also holds `count` values of type `kind` in `tag`."""
    plain = encode(Image.new("RGB", (64, 64), (90, 140, 30)), "TIFF")
    size = count * (8 if kind == RATIONAL else 2)
    (ifd,) = struct.unpack_from("<I", plain, 4)
    (n,) = struct.unpack_from("<H", plain, ifd)
    entries = [plain[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(n)]
    entries = [e for e in entries if struct.unpack_from("<H", e)[0] != tag]
    new_ifd = len(plain)
    values_at = new_ifd + 2 + 12 * (len(entries) + 1) + 4
    entries.append(struct.pack("<HHII", tag, kind, count, values_at))
    entries.sort(key=lambda e: struct.unpack_from("<H", e)[0])
    table = struct.pack("<H", len(entries)) + b"".join(entries) + bytes(4)
    values = struct.pack("<II", 72, 1) * count if kind == RATIONAL else bytes(size)
    head = plain[:4] + struct.pack("<I", new_ifd)
    return head + plain[8:] + table + values


def test_a_tiff_field_of_millions_of_values_is_refused_before_pillow() -> None:
    bomb = _tiff_with_field(282, RATIONAL, 200_000)  # XResolution, 1.6 MB
    with pytest.raises(PayloadTooLarge, match="200,000 in tag 282 alone"):
        check_tiff_strips(bomb)
    with pytest.raises(PayloadTooLarge, match="more values than fit in 8 MB once read"):
        prepare(bomb, RGB, LIMITS)


def test_large_real_fields_pass() -> None:
    """A 16-bit transfer function (3 x 65,536 SHORTs) is the largest field real files carry;
    the TIFF with it decodes (Pillow ignores the field)."""
    transfer = _tiff_with_field(301, SHORT, 3 * 65_536)
    check_tiff_strips(transfer)
    assert MAX_TIFF_FIELD_BYTES > 3 * 65_536 * 32
    assert prepare(transfer, RGB, LIMITS).info.format == "TIFF"
    assert prepare(_tiff_with_field(282, RATIONAL, 1), RGB, LIMITS).info.format == "TIFF"


def _png_with_orientation(count: int) -> bytes:
    field = (0x0112, RATIONAL, count, struct.pack("<II", 1, 1) * count)
    png = encode(Image.new("RGB", (64, 64), (90, 140, 30)), "PNG")
    return png_with_exif_chunk(png, exif_payload([field])[6:])


def test_an_orientation_of_many_values_is_invalid_and_never_decoded() -> None:
    bomb = _png_with_orientation(200_000)  # 1.6 MB; Pillow makes 30 MB of objects of it
    assert orientation_values(exif_payload([(0x0112, RATIONAL, 7, bytes(56))])) == 7
    tracemalloc.start()
    try:
        info = prepare(bomb, RGB, LIMITS).info
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.exif == "invalid"
    assert peak < 12_000_000, peak  # the block itself (1.6 MB) read twice, no objects


def test_ordinary_orientations_still_apply() -> None:
    assert orientation_values(exif_payload([orientation_entry(6)])) == 1
    assert orientation_values(b"not exif") == 0
    png = encode(Image.new("RGB", (64, 32), (90, 140, 30)), "PNG")
    turned = png_with_exif_chunk(png, exif_payload([(0x0112, SHORT, 1, short(6))])[6:])
    info = prepare(turned, RGB, LIMITS).info
    assert (info.exif, info.orientation) == ("applied", 6)


def _avif_with_orientation_values(count: int) -> bytes:
    """An AVIF whose Exif item holds an orientation of `count` RATIONALs: saved with the
    field under tag 0x0113 (Pillow's writer would decode an orientation), then renamed."""
    exif = exif_payload([(0x0113, RATIONAL, count, struct.pack("<II", 1, 1) * count)])
    data = encode(Image.new("RGB", (64, 64), (90, 140, 30)), "AVIF", exif=exif, speed=10)
    entry = struct.pack("<HHI", 0x0113, RATIONAL, count)
    assert data.count(entry) == 1
    return data.replace(entry, struct.pack("<HHI", 0x0112, RATIONAL, count))


def test_an_avif_orientation_of_many_values_is_refused_before_it_is_opened() -> None:
    over = _avif_with_orientation_values(MAX_EXIF_ORIENTATION_VALUES + 1)
    with pytest.raises(PayloadTooLarge, match="EXIF orientation field of 65 values"):
        prepare(over, RGB, LIMITS)
    assert prepare(_avif_with_orientation_values(2), RGB, LIMITS).info.exif == "invalid"
