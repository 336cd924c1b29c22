"""HEIC/HEIF uploads (round 39): the iPhone's photo format, decoded by libheif through pi-heif,
with every size its HEVC data codes, its `ispe` declares or its grid canvas takes read from
the boxes before libheif parses anything (app/heif_items.py, app/formats.py heif_refusal)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.bundle import InputSpec
from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from app.formats import sniff_format
from app.heif_items import heif_items, sps_size
from app.imaging import ImageLimits, prepare
from tests.images import encode, heic, heic_grid, photo

RGB = InputSpec(height=224, width=224, channels=3, color="rgb")
LIMITS = ImageLimits()


@pytest.fixture(scope="module")
def yurt(photos_dir: Path) -> Image.Image:
    return photo(photos_dir / "foolbox" / "imagenet_08_915.jpg").convert("RGB")


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIF"),
        (_ftyp(b"mif1", b"heic"), "HEIF"),
        (_ftyp(b"heix", b"mif1"), "HEIF"),  # 10-bit
        (_ftyp(b"msf1", b"hevc"), "HEIF"),  # a sequence: sniffed, then refused with a reason
        (_ftyp(b"mif1", b"avif"), "AVIF"),
        (_ftyp(b"heic", b"mif1", b"avif"), "HEIF"),  # a HEVC major brand decides (was AVIF)
        (_ftyp(b"isom", b"mp41"), None),
    ],
)
def test_heif_is_sniffed_by_its_brands(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head + b"\0" * 32) == fmt


def test_a_heic_photo_is_prepared_like_its_png(yurt: Image.Image) -> None:
    """Same picture, same model input, within HEVC's loss (quality 90)."""
    got = prepare(heic(yurt, quality=90), RGB, LIMITS)
    want = prepare(encode(yurt, "PNG"), RGB, LIMITS)
    assert got.info.format == "HEIF" and got.info.width == yurt.width
    assert np.abs(got.array - want.array).mean() < 3.0


def test_heic_rotation_is_applied_once(yurt: Image.Image) -> None:
    """pillow-heif writes EXIF orientation 6 as an `irot` transform; libheif applies it and the
    EXIF tag is reset, so the picture is turned once, not twice."""
    exif = Image.Exif()
    exif[0x0112] = 6
    got = prepare(heic(yurt, exif=exif.tobytes()), RGB, LIMITS)
    want = prepare(encode(yurt.transpose(Image.Transpose.ROTATE_270), "PNG"), RGB, LIMITS)
    assert (got.info.width, got.info.height) == (yurt.height, yurt.width)
    assert np.abs(got.array - want.array).mean() < 4.0


def test_the_sequence_parameter_set_gives_the_coded_size_depth_and_chroma(
    yurt: Image.Image,
) -> None:
    items = heif_items(heic(yurt.resize((450, 300))))
    (w, h), declared = items.coded[0], items.declared[0]
    assert declared == (450, 300)
    assert 450 <= w < 450 + 16 and 300 <= h < 300 + 16  # coded in whole coding blocks
    assert items.plane_bytes == pytest.approx(w * h * 1.5)  # 8-bit 4:2:0
    assert items.primary == b"hvc1" and not items.sequence


def _ue(n: int) -> str:
    """Exp-Golomb code of n (H.265 9.2)."""
    code = bin(n + 1)[2:]
    return "0" * (len(code) - 1) + code


def test_sps_exp_golomb_fields_are_read_past_emulation_prevention() -> None:
    """A hand-written SPS (4:2:2, 10-bit, 4096x1024 with a conformance window): its
    profile's zero bytes need 00 00 03 escapes, which the reader removes."""
    bits = "0001" + "000" + "1" + "0" * 96  # vps id 1, no sub-layers, nesting, profile-tier-level
    bits += _ue(0) + _ue(2)  # sps id, chroma_format_idc 2
    bits += _ue(4096) + _ue(1024) + "1" + _ue(0) * 2 + _ue(4) * 2  # size, conformance window
    bits += _ue(2) + _ue(2)  # bit depths: 8 + 2
    bits += "1" + "0" * (-(len(bits) + 1) % 8)  # rbsp trailing bits
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    escaped = raw.replace(b"\x00\x00", b"\x00\x00\x03")
    assert escaped != raw
    w, h, per_pixel, full = sps_size(b"\x42\x01" + escaped)
    assert not full  # 4:2:2
    assert (w, h) == (4096, 1024)
    assert per_pixel == 2 * (1 + 2 * 0.5)  # 2-byte samples, chroma planes half size each


@pytest.mark.parametrize("idat", [True, False], ids=["grid-in-idat", "grid-in-mdat"])
def test_a_grid_is_decoded_onto_its_canvas(yurt: Image.Image, idat: bool) -> None:
    """iPhone photos are grids of 512x512 tiles, the grid's own data in the meta box's idat;
    here 2x3 tiles of 128x128."""
    data = heic_grid(heic(yurt.resize((128, 128))), 2, 3, (384, 256), idat=idat)
    assert (b"idat" in data) == idat
    got = prepare(data, RGB, LIMITS)
    assert (got.info.width, got.info.height) == (384, 256)
    assert heif_items(data).canvases == [(384, 256)]


@pytest.mark.parametrize(
    ("out", "ispe"),
    [((20_000, 20_000), None), ((20_000, 20_000), (256, 256)), ((70_000, 1_000), None)],
    ids=["canvas", "canvas-ispe-lies", "wide-fields"],
)
def test_a_grid_canvas_over_the_limit_is_refused_before_decoding(
    yurt: Image.Image, out: tuple[int, int], ispe: tuple[int, int] | None
) -> None:
    """A few KB whose grid canvas is 400 MP would have libheif allocate it whole."""
    data = heic_grid(heic(yurt.resize((64, 64))), 1, 1, out, ispe)
    assert len(data) < 50_000
    t0 = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="HEIC is decoded whole"):
        prepare(data, RGB, LIMITS)
    assert time.perf_counter() - t0 < 0.5


def test_a_coded_picture_larger_than_its_declared_size_is_refused(yurt: Image.Image) -> None:
    """The `ispe` says 64x64; the HEVC data codes 1280x960: the coded size counts."""
    data = heic(yurt.resize((1280, 960)))
    at = data.index(b"ispe") + 8
    lying = data[:at] + struct.pack(">II", 64, 64) + data[at + 8 :]
    assert heif_items(lying).declared == [(64, 64)]
    with pytest.raises(PayloadTooLarge, match="1280x960"):
        prepare(lying, RGB, ImageLimits(max_avif_pixels=1_000_000))


def test_many_tiles_count_together(yurt: Image.Image) -> None:
    """Each tile within the limit, the canvas small, but the tiles together far over it."""
    data = heic_grid(heic(yurt.resize((256, 256))), 8, 8, (256, 256))
    with pytest.raises(PayloadTooLarge, match="in all its coded images"):
        prepare(data, RGB, ImageLimits(max_avif_pixels=1_000_000))


def test_a_heif_sequence_is_refused_with_a_reason(yurt: Image.Image) -> None:
    data = heic(yurt.resize((64, 64)))
    data = data.replace(b"heic", b"hevc").replace(b"mif1", b"msf1")
    with pytest.raises(UnsupportedMediaType, match="image sequence"):
        prepare(data, RGB, LIMITS)


def test_images_coded_otherwise_are_refused(yurt: Image.Image) -> None:
    """A HEIF holding an AV1 item but no AVIF brand: libheif here has no AV1 decoder."""
    avif = encode(yurt.resize((64, 64)), "AVIF", quality=50)
    at = avif.index(b"ftyp") + 4
    size = int.from_bytes(avif[at - 8 : at - 4], "big")
    mif1 = avif[:at] + b"mif1\0\0\0\0" + b"mif1" * ((size - 16) // 4) + avif[at - 8 + size :]
    assert sniff_format(mif1) == "HEIF"
    with pytest.raises(UnsupportedMediaType, match="'av01'"):
        prepare(mif1, RGB, LIMITS)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9, 0.99])
def test_a_truncated_heic_is_refused_as_damaged(yurt: Image.Image, cut: float) -> None:
    data = heic(yurt.resize((320, 240)))
    with pytest.raises((InvalidImage, UnsupportedMediaType)):
        prepare(data[: int(len(data) * cut)], RGB, LIMITS)


def test_damaged_boxes_are_refused_before_libheif(yurt: Image.Image) -> None:
    data = bytearray(heic(yurt.resize((64, 64))))
    at = data.index(b"hvcC") - 4
    data[at + 8 + 22] = 200  # numOfArrays: far more than the box holds
    with pytest.raises(InvalidImage, match="could not be read"):
        prepare(bytes(data), RGB, LIMITS)
    head = _ftyp(b"heic", b"mif1", b"heic") + b"\0" * 64  # no meta box: no image at all
    with pytest.raises(InvalidImage, match="no meta box"):
        prepare(head, RGB, LIMITS)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_heic_strips_are_pillows_whole_decode_exactly(
    yurt: Image.Image, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in strips from libheif's picture (rows padded: 451 px wide), not loaded whole
    by Pillow (a copy of it): the model's input is the same to the bit."""
    data = heic(yurt.resize((451, 300)).convert(mode), quality=70)
    strips = prepare(data, RGB, LIMITS).array
    import app.imaging

    monkeypatch.setattr(app.imaging, "plan", lambda *args: None)
    whole = prepare(data, RGB, LIMITS).array
    np.testing.assert_array_equal(strips, whole)


def test_a_primary_item_that_is_missing_is_damage(yurt: Image.Image) -> None:
    data = heic_grid(heic(yurt.resize((64, 64))), 1, 2, (128, 64))
    at = data.index(b"pitm") + 8
    with pytest.raises(InvalidImage, match="the primary item is not among the items"):
        prepare(data[:at] + struct.pack(">H", 4242) + data[at + 2 :], RGB, LIMITS)
    with pytest.raises(InvalidImage, match="no primary item"):
        prepare(data.replace(b"pitm", b"xitm"), RGB, LIMITS)


def test_a_coded_picture_used_many_times_counts_each_time(yurt: Image.Image) -> None:
    """Round 39's attack: a 10x10 grid of `iden` items all made of one 13 MP picture, on a
    canvas of that picture's size (tiles may overhang it), 13 KB that held a worker past the
    10 s deadline: one coded picture, decoded 100 times. Each use counts (here 16 uses of a
    64x64 picture against a 40,000-pixel limit)."""
    data = heic_grid(heic(yurt.resize((64, 64))), 4, 4, (64, 64), iden=True)
    items = heif_items(data)
    assert items.coded == [(64, 64)] and items.decoded == 16 * 64 * 64
    with pytest.raises(PayloadTooLarge, match="as often as its picture uses them"):
        prepare(data, RGB, ImageLimits(max_avif_pixels=40_000))
    fine = heic_grid(heic(yurt.resize((64, 64))), 2, 3, (192, 128), iden=True)
    assert prepare(fine, RGB, LIMITS).info.width == 192  # libheif decodes identity tiles


def test_an_alpha_plane_decoded_with_the_picture_counts_too(yurt: Image.Image) -> None:
    """Round 44's attack: a 64x64 picture whose alpha plane (an `auxl` item) was a grid of 100
    `iden` copies of one 13 MP picture, 8 KB that took 10 s of CPU: libheif decodes an image's
    alpha with it, and only the primary's `dimg` references were counted."""
    data = heic_grid(heic(yurt.resize((64, 64))), 4, 4, (64, 64), iden=True, alpha=True)
    items = heif_items(data)
    assert items.coded == [(64, 64), (64, 64)]
    assert items.decoded == 17 * 64 * 64  # the picture, and its alpha's 16 tiles
    with pytest.raises(PayloadTooLarge, match="alpha included"):
        prepare(data, RGB, ImageLimits(max_avif_pixels=40_000))
    # An alpha tile made of the picture the alpha belongs to: a loop, damage.
    tile = data.index(struct.pack(">HHH", 5, 1, 1))  # identity item 5 is made of item 1
    looped = data[:tile] + struct.pack(">HHH", 5, 1, 999) + data[tile + 6 :]
    with pytest.raises(InvalidImage, match="made of itself"):
        prepare(looped, RGB, LIMITS)


def test_a_derived_image_made_of_itself_is_damage(yurt: Image.Image) -> None:
    data = heic_grid(heic(yurt.resize((64, 64))), 1, 2, (128, 64), iden=True)
    # the second identity item (id 3) is made of item 1; make it made of the grid (1000)
    at = data.index(struct.pack(">HHH", 3, 1, 1))
    looped = data[:at] + struct.pack(">HHH", 3, 1, 1000) + data[at + 6 :]
    with pytest.raises(InvalidImage, match="made of itself"):
        prepare(looped, RGB, LIMITS)


def test_an_item_or_box_given_twice_is_damage(yurt: Image.Image) -> None:
    """libheif reads the first of two `infe` entries with one item id (or of two `iinf`
    boxes), a dict the last: a 13 MP 10-bit 4:4:4 tile hidden behind a second entry of type
    'Exif' passed the check and took a worker up by 173 MiB (round 39's attack). Refused."""
    data = heic_grid(heic(yurt.resize((64, 64))), 1, 2, (128, 64))
    grid_entry = struct.pack(">HH", 1000, 0) + b"grid"
    twice = data.replace(grid_entry, struct.pack(">HH", 1, 0) + b"grid")
    with pytest.raises(InvalidImage, match="an item is listed twice"):
        prepare(twice, RGB, LIMITS)
    at = data.index(b"iinf") - 4
    size = int.from_bytes(data[at : at + 4], "big")
    meta = data.index(b"meta") - 4
    doubled = bytearray(data[: at + size] + data[at : at + size] + data[at + size :])
    doubled[meta : meta + 4] = (int.from_bytes(data[meta : meta + 4], "big") + size).to_bytes(4)
    with pytest.raises(InvalidImage, match="two 'iinf' boxes"):
        prepare(bytes(doubled), RGB, LIMITS)


def test_full_chroma_costs_a_second_rgb_picture(yurt: Image.Image) -> None:
    """4:4:4 took a worker up by 132 MiB at 13 MP against 60-83 for 4:2:0 (round 39's
    attack): libheif's cost is estimated at the planes, the RGB picture and, for 4:4:4,
    another one; at most 6 bytes a pixel of the limit."""
    small = yurt.resize((64, 64))
    limits = ImageLimits(max_avif_pixels=5_000)  # 30,000 bytes; 64x64 at 9 a pixel is 36,864
    assert prepare(heic(small, chroma=420), RGB, limits).info.width == 64  # 4.5 a pixel
    with pytest.raises(PayloadTooLarge, match="Decoding this HEIC would take about"):
        prepare(heic(small, chroma=444), RGB, limits)
