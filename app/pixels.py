"""Reduce first, convert after: any decoded mode -> a small 8-bit 'L' or 'RGB' image.

The full-size decoded image is read in horizontal strips; each strip is converted to an
8-bit working mode (alpha premultiplied) and reduced by an integer factor, so no full-size
copy is ever made (a 40 MP RGBA image used to cost two more 160 MB buffers, a 16-bit one
several float64 copies). 16-bit and alpha arithmetic is integer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image

# Bytes of source pixels converted per strip.
STRIP_BYTES: Final = 4 * 1024 * 1024

_AS_RGB: Final = frozenset({"RGB", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_FLAT: Final = {"RGBa": "RGB", "La": "L"}  # premultiplied working mode -> on white (`flatten`)


def working_mode(img: Image.Image, cmyk: bool = False) -> str:
    """The 8-bit mode a decoded image is reduced in: 'L', 'RGB', 'La' or 'RGBa'; 'CMYK' for a
    CMYK one when `cmyk` (its profile converts the reduced picture: app/colour.py)."""
    mode = img.mode
    if cmyk and mode == "CMYK":
        return mode
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        return "RGBa"
    if mode in ("LA", "La"):
        return "La"
    if mode in ("1", "L", "F") or mode.startswith("I"):
        return "L"
    return "RGB"  # RGB, P without transparency, CMYK, YCbCr, LAB, HSV, RGBX


def scale_for_peak(mode: str, hi: Any) -> tuple[int, float]:
    """(right shift, multiplier) that bring gray values up to `hi` onto 0-255 (see below)."""
    if mode == "F":
        return 0, 255.0 if float(hi) <= 1.0 else 1.0
    peak = int(hi)
    if peak <= 255:
        return 0, 1.0
    if peak <= 65535:
        return 8, 1.0
    return max(0, peak.bit_length() - 8), 1.0


def _gray_scale(img: Image.Image) -> tuple[int, float]:
    """(right shift, multiplier) that bring a 16/32-bit or float gray image onto 0-255,
    from its extrema (computed in C, no copy): 16-bit data is shifted by 8, float in 0-1 is
    multiplied by 255, anything already within 0-255 is left as it is."""
    try:
        hi: Any = img.getextrema()[1]  # a number for one-band images
    except ValueError:  # Pillow has no extrema for some modes (I;16B): strip by strip
        hi = max(int(np.asarray(s).max()) for _, s in _strips(img, 1))
    return scale_for_peak(img.mode, hi)


def _strips(img: Image.Image, factor: int) -> Iterator[tuple[int, Image.Image]]:
    """(top, strip) pairs covering the image; strip heights are multiples of factor."""
    w, h = img.size
    rows = strip_rows(w, factor)
    for top in range(0, h, rows):
        yield top, img.crop((0, top, w, min(h, top + rows)))


def _gray_to_l(strip: Image.Image, shift: int, mult: float) -> Image.Image:
    arr: npt.NDArray[np.generic] = np.asarray(strip)
    if strip.mode == "F":
        out = np.clip(np.rint(arr.astype(np.float32) * np.float32(mult)), 0, 255)
    else:
        out = np.clip(arr.astype(np.int64) >> shift, 0, 255)
    return Image.fromarray(out.astype(np.uint8), mode="L")


def _to_working(strip: Image.Image, work: str, scale: tuple[int, float]) -> Image.Image:
    mode = strip.mode
    if mode == work:
        return strip
    if work == "L" and (mode == "F" or mode.startswith("I")):
        return _gray_to_l(strip, *scale)
    if work == "RGBa" and mode not in ("RGBA", "RGBa"):
        strip = strip.convert("RGBA")
    if work == "La" and mode == "La":
        return strip
    return strip.convert(work)


def strip_rows(width: int, factor: int) -> int:
    """Rows per strip: about STRIP_BYTES of 4-byte pixels, a multiple of `factor`; any number
    (at least 1) when `factor` rows alone are more than that (`_across_first`)."""
    rows = STRIP_BYTES // max(1, width * 4)
    if _across_first(width, factor):
        return max(1, rows)
    return max(factor, rows // factor * factor)


def _across_first(width: int, factor: int) -> bool:
    """Whether `factor` rows are over STRIP_BYTES (a thin giant lying down, reduced by its
    long side: 400,000 x 100 by 7,142): strips are then reduced across only, and the rows
    of what is left after (a box filter is separable; at most a level of rounding apart)."""
    return factor > 1 and factor * width * 4 > STRIP_BYTES


def reduce_and_convert(
    img: Image.Image,
    factor: int,
    strips: Iterator[tuple[int, Image.Image]] | None = None,
    peak: float | None = None,
    box: tuple[int, int, int, int] | None = None,
    size: tuple[int, int] | None = None,
    cmyk: bool = False,
) -> Image.Image:
    """The decoded image reduced by `factor` (box filter) in its 8-bit working mode. `strips`:
    (top, strip) pairs of `strip_rows` rows covering it, when `img` itself is not decoded
    (app.png_bands), with `peak`, its largest value, for a 16-bit gray one. Strips not
    reduced (factor 1) are flattened too ('RGB' or 'L', as `flatten` makes them after): a
    thin image then has no full-size copy with alpha (160 MB for 100x400,000 RGBA). `box`
    (strips not reduced): only that part of the image is kept (tensorize.seen_box). `size`:
    the strips' image as stored, where `img`'s is not (a TIFF turned by its loader). `cmyk`:
    a CMYK image stays CMYK (`working_mode`)."""
    work = working_mode(img, cmyk)
    wide = work == "L" and img.mode not in ("1", "L")
    scale = (
        (0, 1.0)
        if not wide
        else _gray_scale(img)
        if peak is None
        else scale_for_peak(img.mode, peak)
    )
    w, h = size or img.size
    if strips is None and factor <= 1 and (w * h * 4 <= STRIP_BYTES or img.mode == work):
        return _to_working(img, work, scale)  # nothing to reduce or convert: img itself
    flat = strips is not None and factor <= 1
    cropped = flat and box is not None
    x0, y0, x1, y1 = box if cropped and box is not None else (0, 0, w, h)
    w, h = x1 - x0, y1 - y0
    across = _across_first(w, factor)
    out = Image.new(
        _FLAT.get(work, work) if flat else work, (-(-w // factor), h if across else -(-h // factor))
    )
    for top, raw in strips if strips is not None else _strips(img, factor):
        if cropped:  # every strip is read: damage is still seen
            if top >= y1 or top + raw.height <= y0:
                continue
            raw = raw.crop((x0, max(0, y0 - top), x1, min(raw.height, y1 - top)))
            top = max(top, y0) - y0
        strip = _to_working(raw, work, scale)
        if factor > 1:
            strip = strip.reduce((factor, 1) if across else factor)
        elif flat:
            strip = flatten(strip)
        out.paste(strip, (0, top if across else top // factor))
    return out.reduce((1, factor)) if across else out


def flatten(img: Image.Image) -> Image.Image:
    """Composite premultiplied alpha on white (integer maths): 'RGBa'/'La' -> 'RGB'/'L', in
    strips: an image that could not be reduced (40 MP, 100 px high) needed ~15 bytes a pixel
    of numpy temporaries when done whole."""
    if img.mode not in ("RGBa", "La"):
        return img
    w, h = img.size
    if w * h * 4 <= STRIP_BYTES:
        return _flatten_strip(img)
    out = Image.new("L" if img.mode == "La" else "RGB", img.size)
    for top, strip in _strips(img, 1):
        out.paste(_flatten_strip(strip), (0, top))
    return out


def _flatten_strip(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if arr.ndim == 2:  # defensive: some Pillow builds expose La as one plane
        return img.convert("L")
    # Premultiplied colour c' = c * a / 255; on white: c' + 255 - a, never above 255.
    color = arr[..., :-1].astype(np.uint16) + (255 - arr[..., -1:].astype(np.uint16))
    flat = np.minimum(color, 255).astype(np.uint8)
    if img.mode == "La":
        return Image.fromarray(flat[..., 0], mode="L")
    return Image.fromarray(flat, mode="RGB")
