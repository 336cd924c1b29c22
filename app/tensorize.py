"""Pixels at model size: the bundle's resize policy (stretch, center_crop, letterbox) and the
float32 tensor in its pixel range and normalisation. Pillow + numpy only; `app.imaging` uses
these after decoding, and training reads through the same functions (docs/architecture.md)."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.bundle import InputSpec
from app.trim import FRAME_MAX_PIXELS

_RESAMPLE: Final = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def resize(img: Image.Image, spec: InputSpec) -> Image.Image:
    """Bring an image to spec.width x spec.height per the bundle's resize mode."""
    tw, th = spec.width, spec.height
    method = _RESAMPLE[spec.resize.interpolation]
    w, h = img.size
    if (w, h) == (tw, th):
        return img
    if spec.resize.mode == "stretch":
        return img.resize((tw, th), method)
    if spec.resize.mode == "center_crop":
        # Scale only the region kept (resize's `box`): the pixels of scaling the whole picture
        # and cropping, within one level of rounding, without scaling what the crop drops (a
        # quarter of a 4:3 photo: 640x480 in 2.3 instead of 3.0 ms; and 400000x100 is not
        # scaled to 896000x224, 1.3 GB and 2 s, to keep its middle).
        return img.resize((tw, th), method, box=_kept(w, h, tw, th))
    # letterbox
    scale = min(tw / w, th / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = img.resize((nw, nh), method)
    fill = spec.resize.pad_value
    canvas = Image.new(img.mode, (tw, th), fill if img.mode == "L" else (fill, fill, fill))
    canvas.paste(scaled, ((tw - nw) // 2, (th - nh) // 2))
    return canvas


# A picture whose every channel stays within this range (of 0-255) as the model is about to
# see it (trimmed, framed, painted) is blank: one colour, JPEG noise included.
BLANK_RANGE: Final = 8


def _kept(w: int, h: int, tw: int, th: int) -> tuple[float, float, float, float]:
    """The region of a w x h picture that a centre crop to tw x th keeps (left, top, right,
    bottom, in the picture's pixels)."""
    scale = max(tw / w, th / h)
    nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
    left, top = (nw - tw) // 2, (nh - th) // 2
    sx, sy = w / nw, h / nh
    return left * sx, top * sy, (left + tw) * sx, (top + th) * sy


Box = tuple[int, int, int, int]


def seen_box(spec: InputSpec, w: int, h: int) -> Box | None:
    """The part of a thin w x h picture that holds everything the model sees of it: the
    centred square of its short side, with a margin for the resampling filter, for a model
    that takes a square centre crop and reads nothing else (no trimming or automatic
    inversion, which read the whole picture or its border). A model that frames the object or
    paints a white background gets the box too when the picture is over FRAME_MAX_PIXELS,
    where framing would skip it: the square is then prepared as any picture of its size is
    (its own border read for the background). A centred square is the same box whether the
    picture is stored turned or upright. None when the box would keep half the picture or
    more: then it is decoded whole, as before."""
    if spec.resize.mode != "center_crop" or spec.width != spec.height or spec.trim:
        return None
    if spec.invert == "auto":
        return None
    if (spec.frame is not None or spec.background == "white") and w * h <= FRAME_MAX_PIXELS:
        return None
    side = min(w, h)
    keep = side + 2 * (4 + side // 16)  # the filter reads up to 2 px per output px beyond
    if 2 * keep > max(w, h):
        return None
    if w >= h:
        return (w - keep) // 2, 0, (w - keep) // 2 + keep, h
    return 0, (h - keep) // 2, w, (h - keep) // 2 + keep


def blank(img: Image.Image, spec: InputSpec) -> bool:
    """Whether what the model sees of `img` ('L' or 'RGB'; the centre crop's region for a
    model that crops) is one colour: nothing in it to classify (fuzz round 20: white, black
    and transparent pictures got confident answers, "1" at 0.90 on digits)."""
    if spec.resize.mode == "center_crop":
        x0, y0, x1, y1 = (int(v) for v in _kept(img.width, img.height, spec.width, spec.height))
        img = img.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
    extrema = img.getextrema()
    bands = [extrema] if isinstance(extrema[0], int | float) else extrema
    return all(hi - lo <= BLANK_RANGE for lo, hi in bands)


def to_array(img: Image.Image, spec: InputSpec) -> npt.NDArray[np.float32]:
    """Pixels -> float32 H x W x C in the bundle's range and normalisation (inversion, when
    the bundle asks for it, happens on the image before resizing: see `prepare`)."""
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    lo, hi = spec.pixel_range
    if (lo, hi) != (0.0, 255.0):
        arr = (arr * np.float32((hi - lo) / 255.0) + np.float32(lo)).astype(np.float32)
    norm = spec.normalization
    if not norm.in_graph and norm.mean is not None and norm.std is not None:
        mean = np.asarray(norm.mean, dtype=np.float32)
        std = np.asarray(norm.std, dtype=np.float32)
        arr = np.divide(np.subtract(arr, mean), std, dtype=np.float32)
    return np.ascontiguousarray(arr, dtype=np.float32)
