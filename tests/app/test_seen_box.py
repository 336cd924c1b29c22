"""A thin picture (100 x 400,000 px) cannot be reduced before decoding, and a model taking a
square centre crop sees only the middle square of it: its PNG is decoded in bands and only
that square (with a margin for the resampling filter) is kept (round 34: the whole 160 MB
picture took the default server over 600 MB). The prepared pixels are those of the whole
decode; models that read the whole picture (trimming, automatic inversion) keep it whole, and
those that frame it or paint its background keep it whole up to FRAME_MAX_PIXELS (round 35)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app import png_bands, strip_plans
from app.bundle import InputSpec
from app.imaging import ImageLimits, decode, prepare
from app.tensorize import seen_box
from app.trim import FRAME_MAX_PIXELS
from tests.images import encode, png_with_exif_chunk, short, tiff_ifd_bytes

LIMITS = ImageLimits()


@pytest.fixture
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands for pictures of any size, in strips of ~0.3 MB (several per test picture)."""
    monkeypatch.setattr(png_bands, "MIN_BYTES", 0)
    monkeypatch.setattr("app.pixels.STRIP_BYTES", 300_000)


def _thin(w: int, h: int, mode: str) -> bytes:
    """A picture whose every row and column differs (so that a crop off by a pixel shows),
    smooth as a photo is (waves of 9 to 31 px)."""
    y, x = np.mgrid[0:h, 0:w]
    planes = [
        128 + 120 * np.sin(x / 5 + y / 3),
        128 + 120 * np.cos(y / 4) * np.sin(x / 7),
        128 + 100 * np.sin((x + y) / 9),
        200 + 50 * np.sin(y / 2),
    ]
    pixels = np.dstack(planes[: len(mode)]).round().astype(np.uint8)
    return encode(Image.fromarray(pixels.squeeze(), mode), "PNG")


def _whole(data: bytes, spec: InputSpec, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(strip_plans, "seen_box", lambda *args: None)
        return prepare(data, spec, LIMITS).array


def _close(got: np.ndarray, want: np.ndarray, most: float = 3.0) -> None:
    """The centre crop's region, computed on the kept part, lands within 0.03 px of where it
    falls on the whole picture: a level or two where the picture changes fast (`most` more
    in a dithered GIF)."""
    diff = np.abs(got - want)
    assert diff.max() <= most and diff.mean() <= 0.5, (diff.max(), diff.mean())


def test_the_box_is_the_centred_square_with_a_margin(imagenet_spec: InputSpec) -> None:
    assert seen_box(imagenet_spec, 100, 400_000) == (0, 199_940, 100, 200_060)
    assert seen_box(imagenet_spec, 400_000, 100) == (199_940, 0, 200_060, 100)
    assert seen_box(imagenet_spec, 800, 1800) is None  # keeps over half: decoded whole
    assert seen_box(imagenet_spec, 800, 4000) == (0, 1546, 800, 2454)


@pytest.mark.parametrize(
    "change",
    [
        {"trim": True, "resize": {"mode": "letterbox"}},
        {"frame": 0.88},
        {"background": "white"},
        {"resize": {"mode": "letterbox"}},
        {"width": 200},
        {"channels": 1, "color": "gray", "invert": "auto"},
    ],
)
def test_models_that_read_more_than_the_centre_keep_the_whole_picture(
    imagenet_spec: InputSpec, change: dict[str, object]
) -> None:
    spec = InputSpec.model_validate({**imagenet_spec.model_dump(), **change})
    assert seen_box(imagenet_spec, 100, 40_000) is not None
    assert seen_box(spec, 100, 40_000) is None  # 4 MP: framing and painting read it whole


@pytest.mark.parametrize("change", [{"frame": 0.88}, {"background": "white"}])
def test_models_that_frame_keep_the_middle_of_a_picture_too_large_to_frame(
    imagenet_spec: InputSpec, change: dict[str, object]
) -> None:
    """Over FRAME_MAX_PIXELS framing skips the picture: it is a centre crop like any other,
    and its middle square is prepared as a picture of that size (santa, bird: a 100x400,000
    PNG took a worker up by 158-201 MiB decoded whole)."""
    spec = InputSpec.model_validate({**imagenet_spec.model_dump(), **change})
    assert seen_box(spec, 100, FRAME_MAX_PIXELS // 100) is None
    box = seen_box(spec, 100, 400_000)
    assert box == seen_box(imagenet_spec, 100, 400_000) == (0, 199_940, 100, 200_060)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
@pytest.mark.parametrize("size", [(60, 3000), (3000, 60)], ids=["tall", "wide"])
def test_a_thin_picture_keeps_only_its_middle_and_prepares_the_same(
    small_bands: None,
    imagenet_spec: InputSpec,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    size: tuple[int, int],
) -> None:
    data = _thin(*size, mode)
    img, info = decode(data, imagenet_spec, LIMITS)
    assert (info.width, info.height) == size
    assert max(img.size) == 60 + 2 * (4 + 60 // 16)  # the middle square and its margin
    got = prepare(data, imagenet_spec, LIMITS).array
    want = _whole(data, imagenet_spec, monkeypatch)
    _close(got, want)


def test_an_orientation_turns_the_kept_square_as_the_whole(
    small_bands: None, imagenet_spec: InputSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    for orientation in (3, 6, 8):
        tiff = tiff_ifd_bytes([(0x0112, 3, 1, short(orientation))])
        data = png_with_exif_chunk(_thin(60, 3000, "RGB"), tiff)
        got = prepare(data, imagenet_spec, LIMITS)
        assert got.info.orientation == orientation
        _close(got.array, _whole(data, imagenet_spec, monkeypatch))


def test_a_thin_picture_cut_short_is_still_a_422(
    small_bands: None, imagenet_spec: InputSpec
) -> None:
    """Every band is decoded, those outside the box too: damage anywhere is seen."""
    from app.errors import InvalidImage

    data = _thin(60, 3000, "RGB")
    with pytest.raises(InvalidImage):
        prepare(data[: len(data) * 9 // 10], imagenet_spec, LIMITS)


def test_a_model_that_paints_the_background_gets_the_whole_picture(
    small_bands: None, imagenet_spec: InputSpec
) -> None:
    spec = InputSpec.model_validate({**imagenet_spec.model_dump(), "background": "white"})
    img, _ = decode(_thin(60, 3000, "RGB"), spec, LIMITS)
    assert img.size == (60, 3000)


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "JPEG"])
@pytest.mark.parametrize("size", [(60, 3000), (3000, 60)], ids=["tall", "wide"])
def test_a_thin_picture_decoded_whole_goes_on_as_its_middle(
    imagenet_spec: InputSpec, monkeypatch: pytest.MonkeyPatch, fmt: str, size: tuple[int, int]
) -> None:
    """Formats decoded whole (no bands) keep only the middle square once decoded (round 36's
    attack: a 65,500x610 JPEG turned by its EXIF orientation was a second full-size copy,
    +306 MiB for a worker), and prepare the same pixels."""
    with Image.open(io.BytesIO(_thin(*size, "RGB"))) as im:
        exif = Image.Exif()
        exif[0x0112] = 6
        options = {"exif": exif.tobytes(), "quality": 95} if fmt == "JPEG" else {}
        data = encode(im.convert("RGB"), fmt, **options)
    img, _ = decode(data, imagenet_spec, LIMITS)
    assert max(img.size) == 60 + 2 * (4 + 60 // 16)
    got = prepare(data, imagenet_spec, LIMITS).array
    with monkeypatch.context() as m:
        m.setattr("app.imaging.seen_box", lambda *args: None)
        img, _ = decode(data, imagenet_spec, LIMITS)
        assert max(img.size) == max(size)
        want = prepare(data, imagenet_spec, LIMITS).array
    _close(got, want, 6.0 if fmt == "GIF" else 3.0)


def test_a_thin_giant_jpeg_is_decoded_at_half_size(imagenet_spec: InputSpec) -> None:
    """Over FRAME_MAX_PIXELS with a short side of 2-4x the model's, a JPEG is drafted to 1/2
    (DCT-scaled; its short side stays over the model's): decoded at full size it was the
    largest part of the 306 MiB above. Pictures under that keep their full-size decode."""
    big = encode(Image.new("RGB", (9000, 500), (40, 120, 200)), "JPEG")
    assert prepare(big, imagenet_spec, LIMITS).info.decoded_width == 4500
    small = encode(Image.new("RGB", (8000, 500), (40, 120, 200)), "JPEG")  # 4.0 MP
    assert prepare(small, imagenet_spec, LIMITS).info.decoded_width == 8000
