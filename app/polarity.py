"""Polarity policy (the bundle's input.invert): is a gray picture dark-on-light? Decided
from the median of the outer ring only, for images and for training arrays alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.bundle import InputSpec
from app.trim import sampled

# Border median at or above this (0-255) counts as a light background.
LIGHT_BORDER = 128


def _ring_boxes(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """The outer ring of an h x w image (4% of the shorter side, at least 1 px) as four
    non-overlapping (left, top, right, bottom) boxes; just the top and bottom of an image
    too low to have sides (a thin giant reduced to one row: the two are the same)."""
    t = max(1, round(min(h, w) * 0.04))
    boxes = [(0, 0, w, t), (0, h - t, w, h)]
    if h > 2 * t:
        boxes += [(0, t, t, h - t), (w - t, t, w, h - t)]
    return boxes


def border_is_light(pixels: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """For gray images (..., H, W): is the median of the outer ring light? Vectorised over
    leading axes, so it serves a batch as well."""
    h, w = pixels.shape[-2:]
    lead = pixels.shape[:-2]
    ring = np.concatenate(
        [pixels[..., y0:y1, x0:x1].reshape(*lead, -1) for x0, y0, x1, y1 in _ring_boxes(h, w)],
        axis=-1,
    )
    return np.asarray(np.median(ring, axis=-1) >= LIGHT_BORDER)


def should_invert(img: Image.Image, spec: InputSpec) -> bool:
    """The bundle's polarity policy for one decoded image (see InputSpec.invert). Only the
    ring's pixels are read, never a copy of the whole (possibly large) image."""
    if spec.invert != "auto":
        return bool(spec.invert)
    boxes = _ring_boxes(img.height, img.width)
    # gray levels: a colour picture kept for its background (app/trim.py to_paint) as well
    ring = [np.asarray(sampled(img, box).convert("L")).ravel() for box in boxes]
    return bool(np.median(np.concatenate(ring)) >= LIGHT_BORDER)
