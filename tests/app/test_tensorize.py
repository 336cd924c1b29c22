"""app.tensorize: center_crop scales only the region it keeps, and that gives the pixels of
scaling the whole picture and then cropping (what the bundles were evaluated with)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.bundle import InputSpec, ResizeSpec
from app.tensorize import resize
from tests.images import photo


@pytest.mark.parametrize(
    ("size", "target"), [((640, 480), (224, 224)), ((480, 640), (224, 224)),
                         ((1000, 750), (224, 224)), ((451, 300), (28, 28)),
                         ((300, 451), (96, 64)), ((224, 224), (224, 224))],
)  # fmt: skip
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_center_crop_is_the_crop_of_the_whole_picture_scaled(
    photos_dir: Path, size: tuple[int, int], target: tuple[int, int], interpolation: str
) -> None:
    img = photo(photos_dir / "skimage" / "chelsea.png").convert("RGB").resize(size)
    tw, th = target
    spec = InputSpec(
        width=tw,
        height=th,
        channels=3,
        color="rgb",
        resize=ResizeSpec(mode="center_crop", interpolation=interpolation),  # type: ignore[arg-type]
    )
    got = np.asarray(resize(img, spec), np.int16)
    w, h = size
    scale = max(tw / w, th / h)
    nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
    left, top = (nw - tw) // 2, (nh - th) // 2
    method = getattr(Image.Resampling, interpolation.upper())
    whole = img.resize((nw, nh), method).crop((left, top, left + tw, top + th))
    want = np.asarray(whole, np.int16)
    assert got.shape == want.shape == (th, tw, 3)
    diff = np.abs(got - want)
    assert diff.max() <= 1 and diff.mean() < 0.02  # rounding only
