"""Bounds read from a TIFF's structure before libtiff decodes it (app.decode_guard): tiles
larger than their image, and progressive scans inside JPEG-compressed strips."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from app.bundle import InputSpec
from app.decode_guard import MAX_TILE_PIXELS, DecodeBudget, check_tiff_strips, timed
from app.errors import InvalidImage, PayloadTooLarge
from app.imaging import ImageLimits, prepare
from tests.images import encode, png_chunk, repeat_last_scan, tiff_with_private_tags

RGB = InputSpec(height=32, width=32, channels=3, color="rgb")
GRAY = InputSpec(height=28, width=28, channels=1, color="gray")
LIMITS = ImageLimits()
ROOT = Path(__file__).resolve().parents[2]

# (tag, type, values); strip/tile offsets are filled in to point at the pixel data.
_Entry = tuple[int, int, list[int]]
_FORMATS = {1: "B", 3: "H", 4: "I", 16: "Q"}


def _tiff(entries: list[_Entry], pixels: bytes) -> bytes:
    """A little-endian one-page TIFF whose strip or tile offsets all point at `pixels`."""
    entries = sorted(entries)
    ifd_len = 2 + 12 * len(entries) + 4
    extra_at = 8 + ifd_len
    extra = b""
    values = []
    for tag, kind, vals in entries:
        raw = struct.pack("<" + _FORMATS[kind] * len(vals), *vals)
        values.append((tag, kind, vals, raw))
        if len(raw) > 4:
            extra += raw + b"\0" * (len(raw) % 2)
    data_at = extra_at + len(extra)
    out = bytearray(b"II*\0" + struct.pack("<IH", 8, len(entries)))
    extra = b""
    for tag, kind, vals, raw in values:
        if tag in (273, 324):  # StripOffsets, TileOffsets
            raw = struct.pack("<" + _FORMATS[kind] * len(vals), *[data_at] * len(vals))
        if len(raw) <= 4:
            out += struct.pack("<HHI", tag, kind, len(vals)) + raw.ljust(4, b"\0")
        else:
            out += struct.pack("<HHII", tag, kind, len(vals), extra_at + len(extra))
            extra += raw + b"\0" * (len(raw) % 2)
    return bytes(out + struct.pack("<I", 0) + extra + pixels)


def _tiled_rgb(
    side: int, tile: int, *, compression: int = 1, tile_kind: int = 4, pixels: bytes = b""
) -> bytes:
    """An RGB TIFF of side x side pixels in tile x tile tiles, every tile the same bytes
    (`pixels`, or a whole uncompressed tile of gray)."""
    pixels = pixels or b"\x80" * (tile * tile * 3)
    across = (side + tile - 1) // tile
    n = across * across
    return _tiff(
        [
            (256, 4, [side]),
            (257, 4, [side]),
            (258, 3, [8, 8, 8]),
            (259, 3, [compression]),
            (262, 3, [2]),
            (277, 3, [3]),
            (284, 3, [1]),
            (322, tile_kind, [tile]),
            (323, tile_kind, [tile]),
            (324, 4, [0] * n),
            (325, 4, [len(pixels)] * n),
        ],
        pixels,
    )


def test_ordinary_tiles_decode() -> None:
    """Tiles smaller than the image, or a 256x256 tile for a small image, are fine."""
    for side, tile in ((512, 256), (100, 256), (64, 64)):
        arr = prepare(_tiled_rgb(side, tile), RGB, LIMITS).array
        assert arr.shape == (32, 32, 3), (side, tile)


@pytest.mark.parametrize("compression", [1, 5, 8])  # none, LZW, deflate
@pytest.mark.parametrize("tile_kind", [4, 16])  # LONG, and LONG8 (libtiff reads it too)
def test_a_tile_larger_than_its_image_is_refused_before_decoding(
    compression: int, tile_kind: int
) -> None:
    """A 12 KB file of a 1000x1000 image with one 16384x16384 deflate tile made libtiff
    allocate and fill an 805 MB tile buffer (788 MB peak, 0.5 s; 23168x23168: 1.5 GB, 3 s)
    before failing as 'damaged'. Now a 413 from the header, whatever the compression."""
    bomb = _tiled_rgb(
        1000, 16384, compression=compression, tile_kind=tile_kind, pixels=b"\x80" * 12288
    )
    with pytest.raises(PayloadTooLarge, match="tiles of 16384x16384") as err:
        prepare(bomb, RGB, LIMITS)
    assert err.value.extra["limit_tile_pixels"] == MAX_TILE_PIXELS


def test_the_tile_rule_holds_when_the_image_size_cannot_be_read() -> None:
    """An ImageWidth the walker cannot read counts as 0: only small tiles pass."""
    data = bytearray(_tiled_rgb(64, 2048, pixels=b"\x80" * 64))
    entry = 8 + 2  # the first entry is ImageWidth (256): make its type unknown
    assert struct.unpack_from("<H", data, entry)[0] == 256
    struct.pack_into("<H", data, entry + 2, 12)  # DOUBLE
    with pytest.raises(PayloadTooLarge):
        check_tiff_strips(bytes(data))
    check_tiff_strips(
        _tiled_rgb(64, 1024, pixels=b"\x80" * 64)
    )  # 1024x1024 is within MAX_TILE_PIXELS


def test_tag_values_that_overlap_are_refused_before_libtiff_reads_them() -> None:
    """300 tags on the same 4 MB: a 4 MB file took the worker up by 1,156 MiB (round 35's
    attack on the TIFF bands found it in the whole decode). The same values stored apart
    (a file as large as what is read) are decoded."""
    with pytest.raises(PayloadTooLarge, match="values that overlap"):
        prepare(tiff_with_private_tags(300, 100_000, shared=True), RGB, LIMITS)
    assert prepare(tiff_with_private_tags(30, 100_000, shared=False), RGB, LIMITS).info.width == 64
    with_icc = encode(Image.new("RGB", (64, 64)), "TIFF", icc_profile=bytes(300_000))
    assert prepare(with_icc, RGB, LIMITS).info.format == "TIFF"


PEAK_SCRIPT = """
import resource, sys
sys.path.insert(0, ".")
from tests.app.test_decode_guard import RGB, LIMITS, _tiled_rgb
from app.imaging import prepare
data = _tiled_rgb(1000, 16384, compression=8, pixels=b"\\x80" * 12288)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    prepare(data, RGB, LIMITS)
except Exception as exc:
    print(type(exc).__name__)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_tile_bomb_costs_no_memory() -> None:
    """Fresh process: the refused tile bomb grows the peak RSS by almost nothing (788 MB)."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    kind, growth_mb = out.stdout.split()
    assert kind == "PayloadTooLarge" and int(growth_mb) < 32, out.stdout


def _jpeg_in_tiff(side: int, repeats: int) -> bytes:
    """A gray TIFF with one JPEG-compressed strip: a progressive JPEG (7 scans) whose last
    scan is repeated `repeats` more times."""
    img = Image.new("L", (side, side), 128)
    stream = repeat_last_scan(encode(img, "JPEG", quality=75, progressive=True), repeats)
    return _tiff(
        [
            (256, 4, [side]),
            (257, 4, [side]),
            (258, 3, [8]),
            (259, 3, [7]),  # JPEG
            (262, 3, [1]),
            (273, 4, [0]),
            (277, 3, [1]),
            (278, 4, [side]),
            (279, 4, [len(stream)]),
        ],
        stream,
    )


def test_jpeg_in_tiff_is_limited_to_an_ordinary_progressive_script() -> None:
    """libtiff's own limit is 100 scans: a 140 KB 6000x6000 TIFF with 99 ran 2.2 s, charged
    as one ordinary decode. Now scans beyond one ordinary script (10) are refused (422);
    up to 10 decode as before."""
    arr = prepare(_jpeg_in_tiff(600, 3), GRAY, LIMITS).array  # 10 scans
    assert arr.shape == (28, 28, 1)
    with pytest.raises(InvalidImage):
        prepare(_jpeg_in_tiff(600, 30), GRAY, LIMITS)  # 37 scans


def test_the_decode_budget_counts_cpu_time_not_waiting() -> None:
    # A decode thread that waits for a busy CPU is not decoding: wall time refused a batch
    # that decodes in 1.2 s after 7.3 s on a loaded machine (a 413 for what is a 503's cause).
    budget = DecodeBudget(max_pixels=10**9, max_seconds=0.2)
    with timed(budget):
        time.sleep(0.3)  # off the CPU
    assert budget.seconds < 0.05
    with pytest.raises(PayloadTooLarge, match="s of CPU"), timed(budget):
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.25:  # on it
            pass


@pytest.mark.parametrize(
    ("limit", "used", "charge", "said"),
    [
        (128_000_000, 128_000_000, 1, "128,000,001 pixels of work"),  # "128 ... limit is 128"
        (100_000, 0, 100_001, "100,001 pixels of work"),  # "about 0 megapixels ... is 0"
    ],
)
def test_the_pixel_budget_names_exact_pixels(limit: int, used: int, charge: int, said: str) -> None:
    """Round 29: the 413 said "about 128 megapixels ... the limit per request is 128" one pixel
    over, and "about 0 megapixels ... is 0" under a small IMGCLASS_MAX_REQUEST_PIXELS."""
    budget = DecodeBudget(max_pixels=limit, max_seconds=5.0)
    budget.charge(used)
    with pytest.raises(PayloadTooLarge) as err:
        budget.charge(charge)
    assert said in str(err.value) and f"the limit per request is {limit:,}." in str(err.value)
    budget.charge(0)  # what was refused was not counted


def _png_with_chunks(chunks: list[bytes]) -> bytes:
    """An 8x8 PNG with `chunks` between its header and its pixels."""
    png = encode(Image.new("RGB", (8, 8), (20, 140, 60)), "PNG")
    return png[:33] + b"".join(chunks) + png[33:]  # after the signature and IHDR


def test_the_metadata_chunk_cap_counts_metadata_only() -> None:
    """Round 36's attack: 1,999 text chunks were refused under the documented cap of 2,000
    (IHDR, PLTE and IEND were counted as metadata)."""
    text = png_chunk(b"tEXt", b"k\x00v")
    assert prepare(_png_with_chunks([text] * 2_000), RGB, LIMITS).info.width == 8
    with pytest.raises(PayloadTooLarge, match="more than 2,000 metadata chunks"):
        prepare(_png_with_chunks([text] * 2_001), RGB, LIMITS)


def test_compressed_text_over_pillows_64_mb_is_a_413_saying_so() -> None:
    """70 zTXt chunks of 1 MB of text each (70 KB compressed) before the pixels: Pillow stops
    at 64 MB of text, and the valid file was answered 422 "header damaged" (round 36)."""
    ztxt = png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 1_000_000, 9))
    with pytest.raises(PayloadTooLarge, match="more than 64 MB of text metadata"):
        prepare(_png_with_chunks([ztxt] * 70), RGB, LIMITS)
    assert prepare(_png_with_chunks([ztxt] * 3), RGB, LIMITS).info.width == 8
