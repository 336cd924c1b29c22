"""AVIF uploads (round 34): told apart from HEIC by their ftyp brands, decoded by Pillow's
libavif on one thread, upright by their EXIF or irot/imir, first frame of a sequence, and
refused with a 413 above their own pixel limit, before libavif reads the header when the file
declares the size (app/formats.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.bundle import InputSpec
from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from app.formats import read_avif_header, sniff_format
from app.imaging import ImageLimits, decode, prepare
from tests.images import encode, photo

RGB = InputSpec(height=32, width=32, channels=3, color="rgb")
RGB224 = InputSpec(height=224, width=224, channels=3, color="rgb")
GRAY = InputSpec(height=28, width=28, channels=1, color="gray")
LIMITS = ImageLimits()


@pytest.fixture(scope="module")
def chelsea(photos_dir: Path) -> Image.Image:
    return photo(photos_dir / "skimage" / "chelsea.png").convert("RGB")


def _avif(img: Image.Image, **kwargs: object) -> bytes:
    return encode(img, "AVIF", quality=90, speed=8, **kwargs)


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (_ftyp(b"avif", b"mif1", b"miaf"), "AVIF"),
        (_ftyp(b"mif1", b"miaf", b"avif"), "AVIF"),  # a HEIF major brand, AVIF compatible
        (_ftyp(b"avis", b"msf1"), "AVIF"),  # an image sequence
        (_ftyp(b"heic", b"mif1", b"heic"), None),  # HEVC: not decoded here
        (_ftyp(b"mif1", b"heic"), None),
        (_ftyp(b"isom", b"mp41"), None),  # a video
    ],
)
def test_avif_is_told_from_heic_and_video_by_its_brands(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head + b"\0" * 32) == fmt


def test_an_avif_photo_decodes_like_the_same_photo_in_png(chelsea: Image.Image) -> None:
    img, info = decode(_avif(chelsea), RGB224, LIMITS)
    assert (info.format, info.mode, info.frames) == ("AVIF", "RGB", 1)
    assert img.size == chelsea.size and img.mode == "RGB"
    assert _diff(img, chelsea) < 4.0  # only the lossy coding differs
    out = prepare(_avif(chelsea), RGB, LIMITS)
    assert out.array.shape == (32, 32, 3)


def test_exif_orientation_of_an_avif_is_applied(chelsea: Image.Image) -> None:
    """Pillow writes the orientation as irot/imir boxes and reads them back as EXIF."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    data = _avif(chelsea.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    img, info = decode(data, RGB224, LIMITS)
    assert info.orientation == 6 and info.exif == "applied"
    assert img.size == chelsea.size
    assert _diff(img, chelsea) < 4.0


def test_avif_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    img, info = decode(_avif(rgba), RGB, LIMITS)
    assert info.mode == "RGBA"
    assert np.asarray(img).min() >= 250  # white, give or take the coding


def test_a_gray_avif_stays_gray_for_a_gray_model(chelsea: Image.Image) -> None:
    gray = chelsea.convert("L")
    img, info = decode(_avif(gray), GRAY, LIMITS)  # reduced 5x (to twice the 28 px input)
    assert (info.mode, img.mode) == ("L", "L")
    assert _diff(img, gray.reduce(5)) < 4.0


def test_an_avif_sequence_is_read_by_its_first_frame(chelsea: Image.Image) -> None:
    black = Image.new("RGB", chelsea.size)
    data = _avif(chelsea, save_all=True, append_images=[black, black], duration=80)
    assert sniff_format(data) == "AVIF" and b"avis" in data[:32]
    img, info = decode(data, RGB224, LIMITS)
    assert info.frames == 3
    assert _diff(img, chelsea) < 4.0


def test_an_avif_over_its_own_limit_is_a_413_naming_it(chelsea: Image.Image) -> None:
    data = _avif(chelsea)  # 451x300 = 135,300 pixels
    limits = ImageLimits(max_avif_pixels=100_000)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(data, RGB, limits)
    assert "AVIF is decoded whole, so its limit is 100,000 pixels" in raised.value.detail
    assert "Send it as JPEG, PNG or WebP" in raised.value.detail
    prepare(encode(chelsea, "PNG"), RGB, limits)  # other formats keep theirs
    prepare(data, RGB, ImageLimits(max_avif_pixels=200_000))


def test_a_declared_size_over_the_limit_is_refused_before_libavif_reads_it(
    chelsea: Image.Image,
) -> None:
    """libavif refuses a side over 32768 px itself, which could only be said as a damaged
    header; the ispe property is read first, so the client learns the size and the limit."""
    data = _avif(chelsea)
    assert read_avif_header(data) == chelsea.size
    at = data.index(b"ispe") + 8  # after the box type and its version/flags
    huge = data[:at] + (40_000).to_bytes(4, "big") * 2 + data[at + 8 :]
    assert read_avif_header(huge) == (40_000, 40_000)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(huge, RGB, LIMITS)
    assert "40000x40000 = 1,600,000,000 pixels" in raised.value.detail


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_cut_avif_is_a_422(chelsea: Image.Image, keep: float) -> None:
    data = _avif(chelsea)
    with pytest.raises(InvalidImage) as raised:
        prepare(data[: int(len(data) * keep)], RGB, LIMITS)
    assert "AVIF" in raised.value.detail


def test_boxes_that_lie_about_their_sizes_end_the_walk() -> None:
    """The ispe walk stops at a box that claims more than its parent holds, a zero-size box
    ends its parent, and a million boxes are not all looked at."""
    ftyp = _ftyp(b"avif", b"mif1")
    assert read_avif_header(ftyp + (1 << 31).to_bytes(4, "big") + b"meta" + b"\0" * 64) == (0, 0)
    assert read_avif_header(ftyp + b"\0\0\0\0meta" + b"\0" * 4) == (0, 0)
    tiny = (8).to_bytes(4, "big") + b"free"
    assert read_avif_header(ftyp + tiny * 1_000_000) == (0, 0)
    with pytest.raises((InvalidImage, UnsupportedMediaType)):
        prepare(ftyp + tiny * 1000, RGB, LIMITS)


def test_an_avif_is_decoded_on_one_thread(chelsea: Image.Image) -> None:
    from PIL import AvifImagePlugin

    decode(_avif(chelsea), RGB, LIMITS)
    assert AvifImagePlugin.DEFAULT_MAX_THREADS == 1
