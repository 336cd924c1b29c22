"""Thin giants for models that letterbox (digits, products): the model sees the long side at
full scale, so a picture too thin to be reduced by its short side (100 x 400,000) is reduced by
its long side instead when it would stay over FRAME_MAX_PIXELS (round 35: decoded whole, it
took a worker up by about 200 MiB). Reduced that far it may be one row high: every step that
reads a border (trimming, framing, polarity, the background paint) takes such a picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.bundle import InputSpec, read_metadata
from app.imaging import ImageLimits, decode, prepare
from app.polarity import should_invert
from app.reduction import reduction
from app.trim import backdrop, background
from tests.images import encode, loaded_sizes

ROOT = Path(__file__).resolve().parents[2]
LIMITS = ImageLimits()


def _spec(model: str) -> InputSpec:
    return read_metadata(ROOT / "models" / model / "metadata.json").input


def _line(w: int, h: int, mode: str = "L", backdrop: object = 255) -> bytes:
    """A dark line along most of a thin picture's length."""
    img = Image.new(mode, (w, h), backdrop)  # type: ignore[arg-type]
    ImageDraw.Draw(img).line([(w // 20, h // 2), (w - w // 20, h // 2)], fill="black")
    return encode(img, "PNG")


@pytest.mark.parametrize("model", ["digits", "products"])
def test_the_factor_follows_the_long_side_only_for_thin_giants(model: str) -> None:
    spec = _spec(model)
    side = 2 * max(spec.width, spec.height) * (4 if spec.trim else 1)
    assert reduction((4000, 3000), spec) == 3000 // side  # an ordinary photo: its short side
    assert reduction((100, 400_000), spec) == 400_000 // side
    assert reduction((400_000, 100), spec) == 400_000 // side
    assert reduction((5000, 300), spec) == max(1, 300 // side)  # thin, not a giant once reduced
    # 41,800 x 224: digits reduces it by 4 (10,450 x 56, not a giant); products, which keeps
    # 4x more, would keep 9.4 MP: by its long side
    assert reduction((41_800, 224), spec) == {"digits": 4, "products": 41_800 // 224}[model]
    assert reduction((100, 400_000), _spec("imagenet")) == 1  # centre crop: tensorize.seen_box


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("digits", (400_000, 100)),
        # the others: full runs only (about 0.5 s each)
        pytest.param("digits", (100, 400_000), marks=pytest.mark.slow),
        pytest.param("products", (400_000, 100), marks=pytest.mark.slow),
        pytest.param("products", (100, 400_000), marks=pytest.mark.slow),
    ],
)
def test_a_thin_giant_is_never_decoded_whole_and_is_answered(
    model: str, size: tuple[int, int]
) -> None:
    data = _line(*size)
    with loaded_sizes() as loaded:
        img, info = decode(data, _spec(model), LIMITS)
    assert all(w * h <= 4 * 1024 * 1024 for w, h in loaded)  # decoded in small bands
    assert (info.width, info.height) == size
    assert max(img.size) >= 2 * 28 and min(img.size) == 1
    out = prepare(data, _spec(model), LIMITS)
    assert out.array.shape == (28, 28, 1)


@pytest.mark.slow  # 40 MP PNGs in colour, on backdrops: about 1 s each
@pytest.mark.parametrize("model", ["digits", "products"])
@pytest.mark.parametrize(
    ("size", "mode", "colour"),
    [
        ((4_000_000, 10), "RGB", "#bed7f0"),
        ((10, 4_000_000), "RGB", "white"),
        ((5_000_000, 8), "RGBA", "black"),
        ((400_000, 100), "RGB", "black"),
    ],
)
def test_thin_giants_in_colour_are_answered(
    model: str, size: tuple[int, int], mode: str, colour: str
) -> None:
    """Each of these raised from a one-row border read once reduced (found before commit)."""
    out = prepare(_line(*size, mode, colour), _spec(model), LIMITS)
    assert out.array.shape == (28, 28, 1)


@pytest.mark.parametrize("size", [(224, 1), (224, 2), (1, 224), (2, 224)])
def test_border_readers_take_a_picture_one_or_two_pixels_thin(size: tuple[int, int]) -> None:
    img = Image.new("RGB", size, (200, 215, 240))
    assert background(img) == (200, 215, 240)
    assert backdrop(img) == (200, 215, 240)
    dark = Image.fromarray(np.zeros(size[::-1], np.uint8), "L")
    invert_auto = InputSpec(height=28, width=28, channels=1, color="gray", invert="auto")
    assert should_invert(dark, invert_auto) is False
    assert should_invert(Image.new("L", size, 255), invert_auto) is True
