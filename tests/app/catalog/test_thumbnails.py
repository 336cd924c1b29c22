"""Catalog thumbnails go through the model inputs' decode: same 16-bit and alpha rules, in
colour whatever the model's colour space, never upscaled."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from app.imaging import ImageLimits
from app.ingest import thumbnails


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
