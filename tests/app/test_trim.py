"""The trim-and-centre input policy (app/trim.py, InputSpec.trim) on real decoded pictures."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from app.bundle import InputSpec
from app.imaging import ImageLimits, prepare
from app.trim import background, trim_and_centre


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _shoe_on_white(mode: str = "RGB") -> Image.Image:
    """A dark, wide object in the lower left of a large white picture."""
    img = Image.new(mode, (300, 200), "white")
    ImageDraw.Draw(img).rectangle((20, 120, 139, 179), fill="black")  # 120 x 60
    return img


def test_trim_crops_to_the_object_and_centres_it_in_a_square() -> None:
    out = trim_and_centre(_shoe_on_white())
    assert out.size == (120, 120)
    a = np.asarray(out.convert("L"))
    rows = np.flatnonzero((a < 128).any(axis=1))
    cols = np.flatnonzero((a < 128).any(axis=0))
    assert (cols.min(), cols.max()) == (0, 119)  # the longer side is filled
    assert (rows.min(), rows.max()) == (30, 89)  # centred vertically, padded with white
    assert a[0, 0] == 255


def test_gray_pictures_and_uniform_coloured_backgrounds() -> None:
    out = trim_and_centre(_shoe_on_white("L"))
    assert out.mode == "L" and out.size == (120, 120)
    img = Image.new("RGB", (80, 80), (30, 90, 200))
    ImageDraw.Draw(img).ellipse((50, 50, 69, 59), fill=(255, 255, 0))
    out = trim_and_centre(img)
    assert out.size == (20, 20)
    assert out.getpixel((0, 0)) == (30, 90, 200)


def test_objects_that_already_span_the_picture_are_left_exactly_as_they_are() -> None:
    # Fashion-MNIST-like: the object fills the picture's height, a margin on the sides.
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).rectangle((8, 0, 19, 27), fill=200)
    assert trim_and_centre(img) is img
    img2 = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img2).rectangle((8, 4, 19, 23), fill=200)  # 20 of 28 rows: trimmed
    assert trim_and_centre(img2).size == (20, 20)


def test_scenes_and_blank_pictures_are_left_alone() -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert background(noise) is None
    assert trim_and_centre(noise) is noise
    blank = Image.new("RGB", (50, 40), "white")
    assert trim_and_centre(blank) is blank


def test_prepare_applies_trim_only_when_the_bundle_asks() -> None:
    base = {"height": 28, "width": 28, "channels": 1, "color": "gray", "invert": "auto"}
    old = InputSpec.model_validate(base)  # metadata written before the field existed
    assert old.trim is False
    trimmed = InputSpec.model_validate({**base, "trim": True})
    data = _png(_shoe_on_white())
    plain = prepare(data, old, ImageLimits()).array[..., 0]
    fitted = prepare(data, trimmed, ImageLimits()).array[..., 0]
    # Polarity is decided on the whole picture (white border -> inverted) in both cases.
    assert plain[0, 0] < 50 and fitted[0, 0] < 50
    lit = lambda a: int((a > 128).sum())  # noqa: E731 - object pixels after inversion
    assert lit(fitted) > 3 * lit(plain)
    cols = np.flatnonzero((fitted > 128).any(axis=0))
    assert cols.min() <= 1 and cols.max() >= 26  # fitted by its longer side
