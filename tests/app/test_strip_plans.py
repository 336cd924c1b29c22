"""app.strip_plans: where libwebp cannot be called directly (app.webp_scaled, tested in
test_webp_scaled.py), a large single-frame WebP is read in strips from libwebp's own buffer,
with the pixels and orientation the whole decode gives, and never as a full-size Pillow image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import strip_plans, webp_scaled
from app.bundle import InputSpec
from app.imaging import ImageLimits, decode
from tests.images import encode, loaded_sizes

ROOT = Path(__file__).resolve().parents[2]
W, H = 1500, 1100


@pytest.fixture(autouse=True)
def no_scaled_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine whose libwebp cannot be called (another ABI, none found)."""
    monkeypatch.setattr(webp_scaled, "library", lambda: None)


def _picture(mode: str) -> Image.Image:
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 255, (H // 50 + 1, W // 50 + 1, 4), dtype=np.uint8)
    big = np.kron(blocks, np.ones((50, 50, 1), dtype=np.uint8))[:H, :W]
    return Image.fromarray(big, "RGBA").convert(mode)


def _webp(img: Image.Image, **options: object) -> bytes:
    return encode(img, "WEBP", **options)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


CASES = {
    "lossy": lambda: _webp(_picture("RGB"), quality=80),
    "lossy with alpha": lambda: _webp(_picture("RGBA"), quality=80),
    "lossless": lambda: _webp(_picture("RGBA"), lossless=True),
    "rotated by EXIF": lambda: _webp(_picture("RGB"), quality=80, exif=_exif(6)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_strips_give_the_pixels_of_the_whole_decode(
    name: str,
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = CASES[name]()
    monkeypatch.setattr(strip_plans, "MIN_BYTES", 0)
    with loaded_sizes() as loaded:
        img, info = decode(data, imagenet_spec, default_limits)
    assert (W, H) not in loaded, "a full-size image was made"
    monkeypatch.setattr(strip_plans, "MIN_BYTES", 1 << 62)
    whole, whole_info = decode(data, imagenet_spec, default_limits)
    assert np.array_equal(np.asarray(img), np.asarray(whole))
    assert info.orientation == whole_info.orientation
    assert info.orientation == (6 if name == "rotated by EXIF" else 1)


def test_animated_small_and_unknown_webps_are_loaded_by_pillow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames = [_picture("RGB"), _picture("RGB").rotate(90)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:])
    animated = out.getvalue()
    single = _webp(_picture("RGB"))
    assert strip_plans.plan(single, Image.open(io.BytesIO(single)), 2) is None  # 6.6 MB
    monkeypatch.setattr(strip_plans, "MIN_BYTES", 0)
    assert strip_plans.plan(animated, Image.open(io.BytesIO(animated)), 2) is None
    assert strip_plans.plan(single, Image.open(io.BytesIO(single)), 2) is not None
    opened = Image.open(io.BytesIO(single))
    del opened._decoder  # a Pillow whose WebP plugin works otherwise: its own load
    assert strip_plans.plan(single, opened, 2) is None
