"""Catalog thumbnails go through the model inputs' decode: same 16-bit and alpha rules, in
colour whatever the model's colour space, never upscaled."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app import strip_plans
from app.imaging import ImageLimits
from app.ingest import thumbnails
from tests.images import big_png, exif_payload, loaded_sizes, orientation_entry, png_with_exif_chunk


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _open(jpeg: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG"
    return img


def test_thumbnails_keep_colour_aspect_and_never_upscale() -> None:
    red = _encode(Image.new("RGB", (400, 300), (220, 20, 20)), "JPEG")
    small = _encode(Image.new("RGB", (20, 12), (20, 20, 220)))
    t_red, t_small = thumbnails([red, small], ImageLimits(), 128)
    img = _open(t_red.jpeg)
    assert img.size == (128, 96) and img.mode == "RGB"
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 180 and g < 60 and b < 60
    assert (t_red.info.format, t_red.info.width, t_red.info.height) == ("JPEG", 400, 300)
    assert _open(t_small.jpeg).size == (20, 12)


def test_sixteen_bit_and_alpha_follow_the_ingestion_rules() -> None:
    gray16 = Image.fromarray(np.full((64, 64), 32896, dtype=np.uint16))  # 32896 / 257 = 128
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    t16, talpha = thumbnails([_encode(gray16), _encode(clear)], ImageLimits(), 128)
    assert abs(float(np.asarray(_open(t16.jpeg)).mean()) - 128) < 3
    assert float(np.asarray(_open(talpha.jpeg)).min()) > 245  # transparent -> white


def test_a_thin_giants_thumbnail_is_made_without_a_full_size_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round 36's attack: a 100x400,000 RGBA PNG with an EXIF orientation, added to a catalog,
    took the tree to 880 MiB: its thumbnail was decoded at full size (the model input already
    kept only what the model sees). Thumbnails letterbox, so a thin giant is reduced by its
    long side while it is decoded in bands, as digits and products do."""
    data = png_with_exif_chunk(
        big_png(100, 400_000, mode="RGBA"), exif_payload([orientation_entry(6)])
    )
    factors: list[int] = []
    real = strip_plans.reduce_and_convert

    def spy(img: Image.Image, factor: int, *args: Any) -> Image.Image:
        factors.append(factor)
        return real(img, factor, *args)

    monkeypatch.setattr(strip_plans, "reduce_and_convert", spy)
    with loaded_sizes() as loaded:
        [thumb] = thumbnails([data], ImageLimits(), 128)
    assert (100, 400_000) not in loaded
    assert factors == [400_000 // 256]  # not 1: a 120 MB RGB picture, made in bands
    assert (thumb.info.width, thumb.info.height, thumb.info.orientation) == (100, 400_000, 6)
    with Image.open(io.BytesIO(thumb.jpeg)) as img:
        assert img.size == (128, 1)  # upright: the long side across
