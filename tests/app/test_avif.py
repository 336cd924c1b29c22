"""AVIF uploads (round 34): told apart from HEIC by their ftyp brands, decoded by Pillow's
libavif on one thread, upright by their EXIF or irot/imir, and refused with a 413 above their
own pixel limit before libavif reads anything: the sizes the file declares and the frame
sizes its AV1 data codes (app/formats.py, app/avif_frames.py). Image sequences are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.avif_frames import Unreadable, av1_frames, sequence_frame_size
from app.bundle import InputSpec
from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from app.formats import avif_refusal, sniff_format
from app.imaging import ImageLimits, decode, prepare
from tests.images import avif_with_size, big_avif_flat, encode, loaded_sizes, photo

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
        (_ftyp(b"mif1", *[b"miaf"] * 12, b"avif"), "AVIF"),  # listed 13th (was HEIC)
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIF"),  # HEVC: tests/app/test_heif.py
        (_ftyp(b"mif1", b"heic"), "HEIF"),
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


def test_an_avif_sequence_is_refused_saying_what_to_send(chelsea: Image.Image) -> None:
    """Its frames are in a track, which is not read before decoding: a frame's size could
    not be checked, so a sequence is a 415 (round 34's attack)."""
    black = Image.new("RGB", chelsea.size)
    data = _avif(chelsea, save_all=True, append_images=[black, black], duration=80)
    assert sniff_format(data) == "AVIF" and b"avis" in data[:32]
    with pytest.raises(UnsupportedMediaType) as raised:
        prepare(data, RGB, LIMITS)
    assert "animated AVIF" in raised.value.detail and "still AVIF" in raised.value.detail


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
    assert av1_frames(data).declared == (chelsea.size,)
    huge = avif_with_size(data, 40_000, 40_000)
    assert av1_frames(huge).declared == ((40_000, 40_000),)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(huge, RGB, LIMITS)
    assert "40000x40000 = 1,600,000,000 pixel frame" in raised.value.detail


def test_a_frame_larger_than_its_declared_size_is_refused_by_the_frame() -> None:
    """Round 34's attack: a 6 KB AVIF coding a 16384x16384 frame and declaring 1000x1000 was
    decoded whole by libavif (then scaled to the declared size): a worker +500 MiB. The frame
    size is read from the AV1 sequence header of the item's data."""
    data = avif_with_size(big_avif_flat(4000), 1000, 1000)
    assert av1_frames(data).coded == ((4000, 4000),)
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(data, RGB, ImageLimits(max_avif_pixels=15_000_000))
    assert "4000x4000 = 16,000,000 pixel frame" in raised.value.detail
    prepare(data, RGB, ImageLimits(max_avif_pixels=16_000_000))  # within it: decoded


def _sequence_header(width: int, height: int) -> bytes:
    """A hand-built sequence header OBU (AV1 5.5) with timing and decoder model info and two
    operating points, each with its own parameters, before the frame size fields."""
    bits = "000" + "0" + "0"  # seq_profile, still_picture, reduced_still_picture_header
    bits += "1" + ("0" * 31 + "1") * 2 + "1" + "1"  # timing info, 2 x 32 bits, equal, uvlc 0
    bits += "1" + "00100" + "0" * 32 + "00000" + "00000"  # decoder model info, delay 5 bits
    bits += "1" + "00001"  # initial display delay present, 2 operating points
    for level in ("01000", "00001"):  # level 8 has a tier bit
        bits += "0" * 12 + level + ("0" if level == "01000" else "")
        bits += "1" + "0" * 11  # decoder model for this op: 5 + 5 + 1 bits
        bits += "1" + "0011"  # initial display delay for this op
    bits += "1110" * 2  # frame_width_bits and frame_height_bits: 15
    bits += format(width - 1, "015b") + format(height - 1, "015b")
    bits += "0" * (-len(bits) % 8)
    payload = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return bytes([0x0A, len(payload)]) + payload


def test_the_sequence_header_is_read_with_every_optional_field() -> None:
    obus = b"\x12\x00" + _sequence_header(6000, 4000)  # a temporal delimiter first
    assert sequence_frame_size(obus) == (6000, 4000)


def test_every_sequence_header_of_an_item_counts() -> None:
    """Round 34's second attack: a 640x480 sequence header, then a 16384x16384 one and its
    frame; the decoder follows the second (a 6 KB file, the tree 468 -> 946 MiB)."""
    frame = bytes([0x32, 3]) + b"\0\0\0"  # an OBU_FRAME: skipped by its size
    obus = b"\x12\x00" + _sequence_header(640, 480) + _sequence_header(16384, 16384) + frame
    assert sequence_frame_size(obus) == (16384, 16384)
    with pytest.raises(Unreadable, match="no sequence header"):
        sequence_frame_size(b"\x12\x00" + frame)
    with pytest.raises(Unreadable, match="too many OBUs"):
        sequence_frame_size(b"\x12\x00" * 5000 + _sequence_header(64, 64))


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def test_item_locations_are_bounded_before_they_are_read() -> None:
    """Round 34's second attack: 4,096 items of 65,535 zero-byte extents each (iloc field
    sizes of 0) in a 24 KB file became 268 M tuples: 2 GB and 48 s of one worker. Extents are
    capped in all, and field sizes other than 0, 4 and 8 bytes refused, as libavif does."""
    infe = _box(b"infe", b"\2\0\0\0" + b"\0\1" + b"\0\0" + b"av01")
    iinf = _box(b"iinf", b"\0" * 4 + b"\0\1" + infe)

    def avif(sizes: int, extents: int, field: int) -> bytes:
        item = b"\0\1" + b"\0\0" + b"\0\0" + b"\0" * field + extents.to_bytes(2, "big")
        item += b"\0" * (2 * field * extents)
        iloc = _box(b"iloc", b"\1\0\0\0" + sizes.to_bytes(2, "big") + b"\0\1" + item)
        return _ftyp(b"avif", b"mif1") + _box(b"meta", b"\0" * 4 + iinf + iloc)

    for data, why in (
        (avif(0x0000, 5000, 0), "too many item extents"),
        (avif(0x2200, 1, 2), "other than 0, 4 or 8 bytes"),
    ):
        with pytest.raises(Unreadable, match=why):
            av1_frames(data)
        with pytest.raises(InvalidImage):
            prepare(data, RGB, LIMITS)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_cut_avif_is_a_422(chelsea: Image.Image, keep: float) -> None:
    data = _avif(chelsea)
    with pytest.raises(InvalidImage) as raised:
        prepare(data[: int(len(data) * keep)], RGB, LIMITS)
    assert "AVIF" in raised.value.detail


def test_boxes_that_lie_about_their_sizes_are_a_422() -> None:
    """A box larger than what holds it, a meta box without item locations, and a million
    boxes (not all looked at): each is said to be unreadable, never decoded."""
    ftyp = _ftyp(b"avif", b"mif1")
    tiny = (8).to_bytes(4, "big") + b"free"
    for data in (
        ftyp + (1 << 31).to_bytes(4, "big") + b"meta" + b"\0" * 64,
        ftyp + (20).to_bytes(4, "big") + b"meta" + b"\0" * 12,
        ftyp + tiny * 1_000_000,
        # an empty iinf box at the file's end: the reader indexed past it (IndexError), and
        # the structure check let the file on to libavif unchecked
        ftyp + _box(b"meta", b"\0" * 4 + _box(b"iloc", b"\0" * 8) + _box(b"iinf", b"")),
    ):
        with pytest.raises(InvalidImage) as raised:
            prepare(data, RGB, LIMITS)
        assert "AVIF" in raised.value.detail
        assert isinstance(avif_refusal(data, LIMITS.max_avif_pixels), InvalidImage)


def test_an_avif_is_decoded_on_one_thread(chelsea: Image.Image) -> None:
    from PIL import AvifImagePlugin

    decode(_avif(chelsea), RGB, LIMITS)
    assert AvifImagePlugin.DEFAULT_MAX_THREADS == 1


def test_an_alpha_plane_counts_against_the_limit(chelsea: Image.Image) -> None:
    """Colour and alpha are two AV1 items decoded whole: together at most 1.5 times the
    limit (a 12.5 MP AVIF with alpha added 137 MiB to a worker, 109 without)."""
    rgba = chelsea.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(chelsea.size))
    data = _avif(rgba)
    assert av1_frames(data).coded == (chelsea.size, chelsea.size)
    pixels = chelsea.width * chelsea.height
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(data, RGB, ImageLimits(max_avif_pixels=pixels * 4 // 3 - 1))
    assert f"({2 * pixels:,} pixels in all its frames)" in raised.value.detail
    prepare(data, RGB, ImageLimits(max_avif_pixels=pixels * 4 // 3 + 1))
    prepare(_avif(chelsea), RGB, ImageLimits(max_avif_pixels=pixels))  # no alpha: its size


@pytest.mark.slow  # 2.5-4 s each to encode
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_large_avif_is_read_in_strips_from_libavifs_copy(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 36: Pillow's load copied libavif's frame once more into its own image (4 bytes a
    pixel); the frame is now read in strips straight from libavif's copy, with the same
    pixels."""
    rng = np.random.default_rng(36)
    small = Image.fromarray(rng.integers(0, 255, (40, 60, 4), dtype=np.uint8), "RGBA")
    data = encode(small.resize((4000, 2200), Image.BILINEAR).convert(mode), "AVIF", quality=70)
    with loaded_sizes() as loaded:
        got = prepare(data, RGB224, LIMITS)
    assert (4000, 2200) not in loaded
    monkeypatch.setattr("app.imaging.plan", lambda *args: None)  # loaded whole by Pillow
    with loaded_sizes() as loaded:
        whole = prepare(data, RGB224, LIMITS)
    assert (4000, 2200) in loaded
    assert np.array_equal(got.array, whole.array)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "avif"


@pytest.mark.parametrize(
    ("name", "per_pixel"),
    [("10bit-420-rgb", 3.0), ("12bit-422-rgb", 4.0), ("12bit-444-rgba", 8.0)],
)
def test_the_planes_bytes_are_read_from_the_sequence_headers(name: str, per_pixel: float) -> None:
    """Samples over 8 bits take 2 bytes; 4:2:0 chroma planes a quarter each, 4:2:2 a half,
    4:4:4 whole; an alpha item (monochrome) one plane."""
    frames = av1_frames((FIXTURES / f"{name}.avif").read_bytes())
    assert frames.plane_bytes == per_pixel * 130 * 77


@pytest.mark.parametrize(
    ("subsampling", "per_pixel"), [("4:2:0", 1.5), ("4:2:2", 2.0), ("4:4:4", 3.0)]
)
def test_8_bit_planes_by_subsampling(
    chelsea: Image.Image, subsampling: str, per_pixel: float
) -> None:
    frames = av1_frames(_avif(chelsea, subsampling=subsampling))
    assert frames.plane_bytes == per_pixel * chelsea.width * chelsea.height


def test_deep_planes_over_three_bytes_a_pixel_of_the_limit_are_a_413(chelsea: Image.Image) -> None:
    """Round 37: a 13 MP 12-bit 4:4:4 AVIF (78 MB of 16-bit planes) took a worker up by
    98 MiB though within the pixel limit. The planes may take 3 bytes a pixel of the limit
    (8-bit 4:4:4, or 10-bit 4:2:0, at the limit)."""
    deep = (FIXTURES / "12bit-444-rgba.avif").read_bytes()  # 130x77, 8 bytes a pixel
    limits = ImageLimits(max_avif_pixels=20_000)  # its 10,010 pixels (x2 items) are within
    with pytest.raises(PayloadTooLarge) as raised:
        prepare(deep, RGB, limits)
    assert "decoded planes take 0.1 MB (8 bytes a pixel" in raised.value.detail
    assert "8-bit samples or 4:2:0 chroma" in raised.value.detail
    prepare(deep, RGB, ImageLimits(max_avif_pixels=26_700))  # 80,080 bytes <= 3 x 26,700
    eight_bit = _avif(chelsea)  # 1.5 bytes a pixel: the pixel limit decides
    prepare(eight_bit, RGB, ImageLimits(max_avif_pixels=chelsea.width * chelsea.height))
