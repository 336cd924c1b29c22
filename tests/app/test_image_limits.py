"""Formats decoded whole at full size have their own, lower pixel limits (app/image_limits.py):
AVIF (round 34), animated WebP at half of it (round 34's attack: a 190 KB animated WebP
of 6000x6000 took the default server's tree to 1,017 MiB; libwebp composes each frame on
two full canvases and copies one out), lossless WebP at twice it (round 35: libwebp keeps
a 39 MP one whole, 164 MiB, even when it decodes it reduced), progressive JPEG by the
coefficients libjpeg holds (round 35) and lossless JPEG by its full-size decode (round 36)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.bundle import InputSpec
from app.decode_guard import jpeg_structure
from app.errors import PayloadTooLarge, UnsupportedMediaType
from app.image_limits import ImageLimits, pixel_limit, webp_kind
from app.imaging import prepare
from tests.images import bmp_rle8_runs, encode, png_chunk
from tests.lossless_jpeg import lossless_jpeg

RGB = InputSpec(height=32, width=32, channels=3, color="rgb")
RGB224 = InputSpec(height=224, width=224, channels=3, color="rgb")


def _animated(w: int, h: int) -> bytes:
    frames = [Image.new("RGB", (w, h), c) for c in ((200, 30, 30), (30, 200, 30))]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], quality=50)


def test_each_kind_has_its_limit() -> None:
    limits = ImageLimits(max_pixels=40_000_000, max_avif_pixels=13_000_000)
    assert pixel_limit("PNG", limits) == 40_000_000
    assert pixel_limit("WEBP", limits) == 40_000_000  # a still WebP is decoded reduced
    assert pixel_limit("AVIF", limits) == 13_000_000
    assert pixel_limit("animated WebP", limits) == 6_500_000
    assert pixel_limit("lossless WebP", limits) == 26_000_000
    assert pixel_limit("AVIF", ImageLimits(max_pixels=1_000_000)) == 1_000_000


def test_an_animated_webp_over_its_limit_is_a_413_saying_what_to_send() -> None:
    limits = ImageLimits(max_avif_pixels=2 * 600 * 500 - 2)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(_animated(600, 500), RGB, limits)
    detail = raised.value.detail
    assert detail.startswith("The animated WebP image is 600x500 = 300,000 pixels;"), detail
    assert "so its limit is 299,999 pixels" in detail
    assert "Send its first frame as a still WebP, PNG or JPEG." in detail
    out = prepare(_animated(600, 500), RGB, ImageLimits(max_avif_pixels=2 * 600 * 500))
    assert out.info.frames == 2
    still = encode(Image.new("RGB", (600, 500), (200, 30, 30)), "WEBP")
    assert prepare(still, RGB, limits).info.format == "WEBP"  # a still one: the usual limit


def test_a_lossless_webp_over_its_limit_is_a_413_saying_what_to_send() -> None:
    picture = Image.new("RGB", (600, 500), (30, 90, 200))
    lossless = encode(picture, "WEBP", lossless=True)
    limits = ImageLimits(max_avif_pixels=600 * 500 // 2 - 1)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(lossless, RGB, limits)
    detail = raised.value.detail
    assert detail.startswith("The lossless WebP image is 600x500 = 300,000 pixels;"), detail
    assert "so its limit is 299,998 pixels" in detail
    assert "Send it as PNG (decoded in bands), or as a lossy WebP or JPEG." in detail
    assert prepare(lossless, RGB, ImageLimits(max_avif_pixels=600 * 500 // 2)).info.width == 600
    assert prepare(encode(picture, "WEBP"), RGB, limits).info.format == "WEBP"  # lossy


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({"lossless": True}, "lossless WebP"),
        ({"lossless": True, "exif": b"Exif\x00\x00II*\x00"}, "lossless WebP"),  # VP8X first
        ({"quality": 80}, "WEBP"),
        ({"quality": 80, "alpha": True}, "WEBP"),  # lossy colour, its alpha lossless (ALPH)
    ],
)
def test_the_kind_of_a_webp_is_read_from_its_image_chunk(options: dict, kind: str) -> None:
    alpha = options.pop("alpha", False)
    picture = Image.new("RGBA" if alpha else "RGB", (64, 48), (30, 90, 200))
    assert webp_kind(encode(picture, "WEBP", **options), 1) == kind
    assert webp_kind(encode(picture, "WEBP", **options), 2) == "animated WebP"


def test_a_progressive_jpeg_is_limited_by_the_coefficients_it_holds() -> None:
    """libjpeg holds every coefficient of a progressive JPEG until its last scan, 2 bytes a
    component sample, at any output scale: a 40 MP 4:4:4 one took a worker up by 232 MiB
    (round 35). The limit is 3x AVIF's in samples: 4:4:4 (3 a pixel) gets half what 4:2:0
    (1.5) gets; a baseline JPEG is decoded row by row and keeps the usual limit."""
    picture = Image.new("RGB", (600, 500), (30, 90, 200))
    limits = ImageLimits(max_avif_pixels=600 * 500 - 1)  # 4:4:4 (3 samples a pixel) just over
    full = encode(picture, "JPEG", progressive=True, subsampling=0)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(full, RGB, limits)
    detail = raised.value.detail
    assert detail.startswith("The progressive JPEG image is 600x500 = 300,000 pixels;"), detail
    assert "Send it as a baseline (sequential) JPEG, or smaller." in detail
    half = encode(picture, "JPEG", progressive=True, subsampling=2)
    assert prepare(half, RGB, limits).info.width == 600
    assert prepare(encode(picture, "JPEG", subsampling=0), RGB, limits).info.width == 600
    gray = encode(picture.convert("L"), "JPEG", progressive=True)
    assert prepare(gray, RGB, ImageLimits(max_avif_pixels=600 * 500 // 3)).info.width == 600


@pytest.mark.parametrize(
    ("mode", "options", "samples", "progressive"),
    [
        ("RGB", {"subsampling": 0}, 3.0, False),
        ("RGB", {"subsampling": 1}, 2.0, False),
        ("RGB", {"subsampling": 2, "progressive": True}, 1.5, True),
        ("L", {"progressive": True}, 1.0, True),
        ("CMYK", {}, 4.0, False),
    ],
)
def test_the_samples_a_pixel_come_from_the_frame_header(
    mode: str, options: dict, samples: float, progressive: bool
) -> None:
    data = encode(Image.new(mode, (64, 48)), "JPEG", **options)
    found = jpeg_structure(data, 100)
    assert (found.samples, found.progressive, found.buffered) == (samples, progressive, progressive)


def test_a_large_tiff_that_cannot_go_by_bands_has_avifs_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page in one LZW strip cannot be split (app.tiff_bands): decoded whole, a 40 MP one
    took a worker up by 270 MiB (round 35). Over the band threshold it has AVIF's limit; the
    same picture in strips is decoded by bands and keeps the usual one."""
    monkeypatch.setattr("app.imaging.BAND_BYTES", 0)
    monkeypatch.setattr("app.tiff_bands.MIN_BYTES", 0)
    monkeypatch.setattr("app.tiff_bands.MAX_UNIT_BYTES", 64 * 1024)
    picture = Image.new("RGB", (600, 500), (30, 90, 200))
    one_strip = encode(picture, "TIFF", compression="tiff_lzw", tiffinfo={278: 500})
    limits = ImageLimits(max_avif_pixels=600 * 500 - 1)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(one_strip, RGB, limits)
    detail = raised.value.detail
    assert detail.startswith("The TIFF image is 600x500 = 300,000 pixels; its page cannot"), detail
    assert "Send it in strips of a few MB" in detail
    in_strips = encode(picture, "TIFF", compression="tiff_lzw", tiffinfo={278: 16})
    assert prepare(in_strips, RGB, limits).info.width == 600
    assert prepare(one_strip, RGB, ImageLimits(max_avif_pixels=600 * 500)).info.width == 600


def _interlaced_png(width: int, height: int, mode: str) -> bytes:
    """A PNG stored in Adam7's seven passes (Pillow writes none), of one gray (opaque)."""
    pixel, colour = {"L": (b"Z", 0), "RGB": (b"ZZZ", 2), "RGBA": (b"ZZZ\xff", 6)}[mode]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    rows = []
    for x0, y0, dx, dy in [*passes, (0, 1, 1, 2)]:
        across = len(range(x0, width, dx))
        if across:
            rows += [b"\x00" + pixel * across] * len(range(y0, height, dy))  # Z: 90
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 1)
    body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"".join(rows)))
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def test_an_interlaced_colour_png_has_the_limit_of_a_picture_decoded_whole() -> None:
    """Its passes fill the whole picture, so it cannot go by bands: a 40 MP one took a worker
    up by 161 MiB (round 35). In colour it has twice AVIF's limit; gray keeps the usual one
    (1 byte a pixel), as a PNG that is not interlaced does."""
    limits = ImageLimits(max_avif_pixels=600 * 500 // 2 - 1)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(_interlaced_png(600, 500, "RGB"), RGB, limits)
    detail = raised.value.detail
    assert detail.startswith("The interlaced PNG image is 600x500 = 300,000 pixels;"), detail
    assert "Send it without interlacing (decoded in bands), or as JPEG or WebP." in detail
    assert prepare(_interlaced_png(600, 500, "L"), RGB, limits).info.width == 600
    plain = encode(Image.new("RGB", (600, 500), (90, 90, 90)), "PNG")
    assert prepare(plain, RGB, limits).info.width == 600
    whole = ImageLimits(max_avif_pixels=600 * 500 // 2)
    out = prepare(_interlaced_png(600, 500, "RGBA"), RGB, whole)
    assert abs(float(out.array.mean()) - 90) < 1


def test_a_run_length_encoded_bmp_has_the_limit_of_a_picture_decoded_whole() -> None:
    """Pillow decodes RLE8/RLE4 in Python into a bytearray it copies once more: a 331 KB RLE8
    BMP of 8000x5000 took a worker up by 115 MiB (round 35's attack). Twice AVIF's limit;
    an uncompressed BMP keeps the usual one."""
    limits = ImageLimits(max_avif_pixels=600 * 500 // 2 - 1)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(bmp_rle8_runs(600, 500, 600 * 500), RGB, limits)
    detail = raised.value.detail
    assert detail.startswith("The run-length-encoded BMP image is 600x500"), detail
    assert "Send it uncompressed, or as PNG." in detail
    plain = encode(Image.new("RGB", (600, 500), (90, 90, 90)), "BMP")
    assert prepare(plain, RGB, limits).info.width == 600
    whole = ImageLimits(max_avif_pixels=600 * 500 // 2)
    assert prepare(bmp_rle8_runs(600, 500, 600 * 500), RGB, whole).info.width == 600


def test_a_lossless_jpeg_is_decoded_at_full_size_within_its_own_limit() -> None:
    """A lossless JPEG (SOF3) has no DCT to scale in: Pillow's reduced decode ("draft") broke
    such a file, and a valid picture was answered "damaged or truncated". It is decoded whole
    at full size, so it has a limit of its own: the progressive one's 6x AVIF's bytes over
    Pillow's image (1 byte a pixel in gray, 4 in colour) and libjpeg's buffer (1 a sample)."""
    limits = ImageLimits()
    assert pixel_limit("lossless JPEG", limits, 1.0) == 39_000_000
    assert pixel_limit("lossless JPEG", limits, 3.0) == 11_142_857
    rng = np.random.default_rng(36)
    gray = rng.integers(0, 256, (1000, 1200), dtype=np.uint8)  # min side >= 4x 224: drafted
    data = lossless_jpeg(gray)
    assert jpeg_structure(data, 100).lossless and not jpeg_structure(data, 100).buffered
    png = encode(Image.fromarray(gray), "PNG")
    for spec in (RGB, RGB224):
        got, want = prepare(data, spec, limits), prepare(png, spec, limits)
        assert got.info.decoded_width == 1200  # never reduced while decoding
        assert np.array_equal(got.array, want.array)
    colour = lossless_jpeg(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    assert jpeg_structure(colour, 100).samples == 3.0
    small = ImageLimits(max_avif_pixels=-(-4800 * 7 // 6) - 1)  # 4,800 pixels, 7 bytes each
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(colour, RGB, small)
    detail = raised.value.detail
    assert detail.startswith("The lossless JPEG image is 80x60 = 4,800 pixels;"), detail
    assert "Send it as a baseline JPEG or PNG, or smaller." in detail
    assert prepare(colour, RGB, ImageLimits(max_avif_pixels=4800 * 7 // 6)).info.width == 80
    claims = lossless_jpeg(gray[:8, :8], width=8000, height=5000)  # 40 MP in its header
    with pytest.raises(PayloadTooLarge, match="its limit is 39,000,000 pixels"):
        prepare(claims, RGB, limits)
    assert not jpeg_structure(encode(Image.fromarray(gray), "JPEG"), 100).lossless


@pytest.mark.parametrize("bits", [12, 16])
def test_a_jpeg_of_more_than_8_bits_a_sample_is_a_415_saying_so(bits: int) -> None:
    """12-bit (medical, SOF1) and 12/16-bit lossless JPEGs: Pillow reads 8-bit JPEGs only, and
    such a file was a 400 "header damaged or incomplete". The walker reads the precision."""
    for data in (
        lossless_jpeg(np.zeros((16, 16), np.uint8)),
        encode(Image.new("L", (16, 16)), "JPEG"),
    ):
        sof = next(
            i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC3)
        )
        wide = data[: sof + 4] + bytes([bits]) + data[sof + 5 :]
        assert jpeg_structure(wide, 100).precision == bits
        with pytest.raises(UnsupportedMediaType) as raised:
            prepare(wide, RGB, ImageLimits())
        assert raised.value.detail.startswith(f"The JPEG has {bits}-bit samples;"), (
            raised.value.detail
        )


def _declaring(fmt: str, w: int, h: int) -> bytes:
    """A file of a few dozen bytes whose header declares w x h pixels."""
    if fmt == "PNG":
        ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        idat = png_chunk(b"IDAT", zlib.compress(b"\0" * 4))
        return b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b"")
    screen = struct.pack("<HHBBB", w, h, 0, 0, 0)  # GIF: no colour table
    image = b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00;"
    return b"GIF89a" + screen + image


@pytest.mark.parametrize(("fmt", "w", "h"), [("PNG", 100_000, 100_000), ("GIF", 65_535, 3_000)])
def test_a_tiny_file_declaring_huge_dimensions_is_told_its_size(fmt: str, w: int, h: int) -> None:
    """Past twice Pillow's own limit (179 million pixels) Pillow refuses the file before it
    says its size: the 413 said only "The image's dimensions exceed the limit of 40,000,000
    pixels". It says the declared size, as every other image over the limit is told."""
    data = _declaring(fmt, w, h)
    assert len(data) < 100
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(data, RGB, ImageLimits())
    detail = raised.value.detail
    assert detail == f"The image is {w}x{h} = {w * h:,} pixels; the limit is 40,000,000.", detail
    assert raised.value.extra["limit_pixels"] == 40_000_000
