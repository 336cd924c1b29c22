"""Trim-and-centre input policy (InputSpec.trim): how Fashion-MNIST's pictures were made.

Fashion-MNIST's product photos were trimmed to the object, fitted by their longer side and
centred; a real product picture usually is not. For a picture on a uniform background (the
outermost pixel ring nearly one colour) this crops to the object's bounding box and pads the
shorter side with that background colour so the object is centred in a square. Pictures
without a uniform background (photos of scenes), and objects that already span the picture,
are returned unchanged. Pillow only.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image, ImageChops

# A pixel belongs to the object when any channel differs from the background by more than this.
TOLERANCE: Final = 24
# An object spanning at least this share of the picture along either side is already fitted
# (Fashion-MNIST's own images are): it is left exactly as it is.
FITTED: Final = 0.95
# The border counts as uniform when at least this share of its pixels is within TOLERANCE of
# its median colour.
UNIFORM_SHARE: Final = 0.9
# The square canvas's side at most (pixels): the models that trim take inputs of tens of
# pixels, and decoding already reduced ordinary pictures far below this.
MAX_SIDE: Final = 2048


def _border(img: Image.Image) -> np.ndarray:
    """The outermost pixel ring, one row per pixel (channels last)."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]], axis=0).astype(np.int16)


def background(img: Image.Image) -> tuple[int, ...] | None:
    """The background colour if the border is uniform, else None."""
    ring = _border(img)
    median = np.median(ring, axis=0).astype(np.int16)
    close = np.all(np.abs(ring - median) <= TOLERANCE, axis=1)
    if float(close.mean()) < UNIFORM_SHARE:
        return None
    return tuple(int(v) for v in median)


def trim_and_centre(img: Image.Image) -> Image.Image:
    """Crop an 'L' or 'RGB' image to its object and centre it in a square of background."""
    if img.width < 3 or img.height < 3:
        return img
    bg = background(img)
    if bg is None:
        return img
    fill: int | tuple[int, ...] = bg[0] if img.mode == "L" else bg
    diff = ImageChops.difference(img, Image.new(img.mode, img.size, fill))
    if diff.mode != "L":  # the largest difference over the channels
        r, g, b = diff.convert("RGB").split()
        diff = ImageChops.lighter(ImageChops.lighter(r, g), b)
    box = diff.point(lambda v: 255 if v > TOLERANCE else 0).getbbox()
    if box is None:  # nothing but background
        return img
    left, top, right, bottom = box
    if max((right - left) / img.width, (bottom - top) / img.height) >= FITTED:
        return img
    obj = img.crop(box)
    if max(obj.size) > MAX_SIDE:
        # A long thin object (a line across a 4,000,000x10 picture) would otherwise be
        # centred in a square of its length: terabytes. Shrink it first, keeping its shape.
        obj = obj.reduce(-(-max(obj.size) // MAX_SIDE))
    side = max(obj.size)
    canvas = Image.new(img.mode, (side, side), fill)
    canvas.paste(obj, ((side - obj.width) // 2, (side - obj.height) // 2))
    return canvas
