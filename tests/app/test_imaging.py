"""Ingestion policy on real photos and crafted edge cases (no HTTP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.bundle import InputSpec, ResizeSpec
from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from app.imaging import ImageLimits, border_is_light, decode, prepare, sniff_format
from tests.images import encode, photo, png_with_header

RGB = InputSpec(height=32, width=32, channels=3, color="rgb")
RGB224 = InputSpec(height=224, width=224, channels=3, color="rgb")  # too big for a JPEG draft
GRAY = InputSpec(height=28, width=28, channels=1, color="gray")
LIMITS = ImageLimits()


@pytest.fixture(scope="module")
def chelsea(photos_dir: Path) -> Image.Image:
    return photo(photos_dir / "skimage" / "chelsea.png").convert("RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF"])
def test_every_accepted_format_decodes(chelsea: Image.Image, fmt: str) -> None:
    data = encode(chelsea, fmt)
    assert sniff_format(data) == fmt
    out = prepare(data, RGB, LIMITS)
    assert out.array.shape == (32, 32, 3) and out.array.dtype == np.float32
    assert out.info.format == fmt
    assert (out.info.width, out.info.height) == chelsea.size


def test_exif_orientation_is_applied(chelsea: Image.Image) -> None:
    # Store the photo rotated and tag it so that a viewer rotates it back (orientation 6 =
    # rotate 90 CW to display). The decoded image must match the original's layout.
    stored = chelsea.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)
    img, info = decode(data, RGB224, LIMITS)
    assert info.orientation == 6
    assert img.size == chelsea.size
    diff = np.abs(np.asarray(img, dtype=np.float32) - np.asarray(chelsea, dtype=np.float32))
    assert diff.mean() < 6.0  # only JPEG loss remains


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent red
    img, _ = decode(encode(rgba, "PNG"), RGB, LIMITS)
    assert np.asarray(img).min() == 255


def test_palette_with_transparency(chelsea: Image.Image) -> None:
    pal = chelsea.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    img, info = decode(encode(pal, "PNG", transparency=0), RGB, LIMITS)
    assert info.mode == "P" and img.mode == "RGB"


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    arr = np.full((20, 20), 32768, dtype=np.uint16)  # mid-gray in 16 bits
    img16 = Image.fromarray(arr)
    img, info = decode(encode(img16, "PNG"), GRAY, LIMITS)
    assert info.mode.startswith("I")
    assert abs(int(np.asarray(img).mean()) - 128) <= 1


def test_cmyk_jpeg(chelsea: Image.Image) -> None:
    data = encode(chelsea.convert("CMYK"), "JPEG", quality=95)
    img, info = decode(data, RGB224, LIMITS)
    assert info.mode == "CMYK" and img.mode == "RGB"
    ref = np.asarray(chelsea, dtype=np.float32)
    assert np.abs(np.asarray(img, dtype=np.float32) - ref).mean() < 8.0


def test_mode_1_and_la() -> None:
    for img in (Image.new("1", (10, 10), 1), Image.new("LA", (10, 10), (0, 0))):
        out = prepare(encode(img, "PNG"), GRAY, LIMITS)
        assert out.array.shape == (28, 28, 1)
    # LA fully transparent -> white
    assert (
        prepare(encode(Image.new("LA", (10, 10), (0, 0)), "PNG"), GRAY, LIMITS).array.min() == 255
    )


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("L", (16, 16), v) for v in (10, 200, 90)]
    buf = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    img, info = decode(buf, GRAY, LIMITS)
    assert info.frames == 3
    assert abs(float(np.asarray(img).mean()) - 10) < 2


def test_large_jpeg_is_drafted(chelsea: Image.Image) -> None:
    big = chelsea.resize((chelsea.width * 8, chelsea.height * 8))
    img, info = decode(encode(big, "JPEG", quality=85), RGB, LIMITS)
    assert (info.width, info.height) == big.size
    assert info.decoded_width < info.width  # DCT scaling kicked in
    assert min(img.size) >= 2 * RGB.height


def test_large_jpeg_decodes_at_the_smallest_dct_scale_that_keeps_the_input(
    chelsea: Image.Image,
) -> None:
    """For a 224 model: 4000x3000 decodes at 1/8 (500x375: both sides >= 224); 2000x1000 at
    1/4 (1/8 would give 125 rows); 640x480, under 4x the input, in full."""
    spec = RGB.model_copy(update={"height": 224, "width": 224})
    for size, decoded in (((4000, 3000), (500, 375)), ((2000, 1000), (500, 250)),
                          ((640, 480), (640, 480))):  # fmt: skip
        data = encode(chelsea.resize(size), "JPEG", quality=85)
        img, info = decode(data, spec, LIMITS)
        assert (info.decoded_width, info.decoded_height) == decoded
        assert min(img.size) >= 224
        assert prepare(data, spec, LIMITS).array.shape == (224, 224, 3)


def test_resize_modes(chelsea: Image.Image) -> None:
    data = encode(chelsea, "PNG")
    for mode in ("stretch", "center_crop", "letterbox"):
        spec = RGB.model_copy(update={"resize": RGB.resize.model_copy(update={"mode": mode})})
        assert prepare(data, spec, LIMITS).array.shape == (32, 32, 3)
    spec = RGB.model_copy(
        update={"resize": RGB.resize.model_copy(update={"mode": "letterbox", "pad_value": 7})}
    )
    arr = prepare(data, spec, LIMITS).array  # 451x300: bars top and bottom
    assert np.all(arr[0] == 7.0)


def test_normalisation_and_range() -> None:
    white = encode(Image.new("RGB", (8, 8), (255, 255, 255)), "PNG")
    spec = InputSpec(
        height=8,
        width=8,
        channels=3,
        color="rgb",
        pixel_range=(0.0, 1.0),
        normalization={"in_graph": False, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},  # type: ignore[arg-type]
    )
    assert np.allclose(prepare(white, spec, LIMITS).array, 2.0)
    inv = GRAY.model_copy(update={"invert": True})
    assert prepare(white, inv, LIMITS).array.max() == 0.0


def test_auto_invert_flips_dark_on_light_only(photos_dir: Path) -> None:
    """`invert: auto`: a dark article on white becomes the light-on-black image the model was
    trained on; a light-on-black image is left alone."""
    auto = GRAY.model_copy(update={"invert": "auto"})
    article = np.asarray(photo(photos_dir / "foolbox" / "fashionMNIST_00_9.png").convert("L"))
    as_trained = prepare(encode(Image.fromarray(article), "PNG"), auto, LIMITS)
    assert not as_trained.info.inverted
    np.testing.assert_array_equal(as_trained.array[..., 0], article.astype(np.float32))
    on_white = prepare(encode(Image.fromarray(255 - article), "PNG"), auto, LIMITS)
    assert on_white.info.inverted
    np.testing.assert_array_equal(on_white.array, as_trained.array)
    # Never for models without the policy.
    assert not prepare(encode(Image.fromarray(255 - article), "PNG"), GRAY, LIMITS).info.inverted


def test_inversion_happens_before_letterbox_padding() -> None:
    """A wide photo of ink on paper: inverted first, so the padding added to make it square
    has the model's background value (0), not the inverted paper colour."""
    spec = GRAY.model_copy(
        update={"invert": "auto", "resize": ResizeSpec(mode="letterbox", pad_value=0)}
    )
    paper = Image.new("L", (280, 140), 250)
    paper.paste(0, (120, 40, 160, 100))  # a dark stroke
    out = prepare(encode(paper, "PNG"), spec, LIMITS)
    assert out.info.inverted
    arr = out.array[..., 0]
    assert arr[:5].max() == 0.0 and arr[-5:].max() == 0.0  # letterbox bands: model background
    assert arr[14, 14] > 200  # the stroke, now light
    assert 0 < arr[9, 2] < 10  # the paper, now dark


def test_border_is_light_is_vectorised() -> None:
    dark = np.zeros((2, 28, 28), np.uint8)
    light = np.full((1, 28, 28), 240, np.uint8)
    light[0, 1:-1, 1:-1] = 0  # only a 1-px light frame: still a light border
    assert border_is_light(np.concatenate([dark, light])).tolist() == [False, False, True]
    assert bool(border_is_light(np.full((40, 30), 200, np.uint8)))


def test_auto_invert_is_only_for_gray_models() -> None:
    with pytest.raises(ValueError, match="auto"):
        InputSpec(height=8, width=8, channels=3, color="rgb", invert="auto")


def test_limits_and_rejections() -> None:
    with pytest.raises(InvalidImage):
        prepare(b"", RGB, LIMITS)
    with pytest.raises(UnsupportedMediaType):
        prepare(b"hello, world", RGB, LIMITS)
    with pytest.raises(PayloadTooLarge):
        prepare(png_with_header(100_000, 100_000), RGB, LIMITS)
    with pytest.raises(PayloadTooLarge):
        prepare(encode(Image.new("L", (100, 100)), "PNG"), RGB, ImageLimits(max_pixels=5000))
    with pytest.raises(PayloadTooLarge):
        prepare(encode(Image.new("L", (100, 100)), "BMP"), RGB, ImageLimits(max_bytes=1000))
    with pytest.raises(InvalidImage, match="at least 8 pixels"):  # IMGCLASS_MIN_IMAGE_SIDE
        prepare(encode(Image.new("L", (7, 30)), "PNG"), RGB, ImageLimits(min_side=8))


TINY_SPECS = [
    RGB,
    GRAY,
    InputSpec(height=28, width=28, channels=1, color="gray", invert="auto", trim=True),
    InputSpec(
        height=32,
        width=32,
        channels=3,
        color="rgb",
        resize=ResizeSpec(mode="center_crop"),
        frame=0.8,
        background="white",
    ),
    InputSpec(height=32, width=32, channels=3, color="rgb", resize=ResizeSpec(mode="letterbox")),
]


@pytest.mark.parametrize(
    "spec", TINY_SPECS, ids=["rgb", "gray", "gray-trim", "rgb-frame", "rgb-letterbox"]
)
@pytest.mark.parametrize(
    ("size", "fmt"),
    [((1, 1), "PNG"), ((1, 1), "GIF"), ((1, 1), "JPEG"), ((2, 1), "WEBP"), ((1, 3000), "PNG")],
)
def test_tiny_and_one_pixel_wide_pictures_are_prepared(
    spec: InputSpec, size: tuple[int, int], fmt: str
) -> None:
    """Every valid picture is classified by default (IMGCLASS_MIN_IMAGE_SIDE is 1): a 1x1
    tracking pixel, a 2x1 one, a 1-px rule, under every resize mode and drawing policy."""
    data = encode(Image.new("RGB", size, (200, 40, 40)), fmt)
    arr = prepare(data, spec, LIMITS).array
    assert arr.shape == (spec.height, spec.width, spec.channels)
    assert np.isfinite(arr).all()
