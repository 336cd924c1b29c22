"""Large images reduced without a full-size Pillow image of their own.

`plan(data, img, factor, spec)` picks the way for an opened, not yet loaded image, or None
(the whole decode): a large PNG or TIFF is decoded in bands (app.png_bands, app.tiff_bands), a
thin one only the part the model sees kept (tensorize.seen_box); a still WebP to be reduced
(or a large one) is decoded once by libwebp straight at the reduced size (app.webp_scaled); a
HEIC is read in strips straight from the picture libheif decodes.
Where that cannot be done (no usable libwebp), a large single-frame WebP is decoded by
Pillow's libwebp and its frame read in strips straight from the copy libwebp hands back.
Pillow's own load then made a fourth full copy (libwebp fills two canvases itself): a
39 MP WebP took a worker from about 190 to 800 MiB, read in strips to 640 MiB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from app.avif_strips import avif_frame
from app.bundle import InputSpec
from app.pixels import reduce_and_convert, strip_rows
from app.png_bands import MIN_BYTES, bands, layout_for_bands
from app.tensorize import Box, seen_box
from app.tiff_bands import TiffLayout, gray_peak
from app.tiff_bands import bands as tiff_bands
from app.tiff_bands import layout_for_bands as tiff_layout
from app.webp_scaled import decode_reduced, still_features

Strips = Iterator[tuple[int, Image.Image]]


@dataclass(frozen=True)
class Plan:
    strips: Callable[[int], Strips] | None  # rows per strip -> (top, strip) pairs; None: load
    peak: Callable[[int], float | None]  # a 16-bit, 32-bit or float gray image's largest value
    # factor -> the image already decoded reduced, or None: by strips (or loaded) after all
    reduced: Callable[[int], Image.Image | None] | None = None
    box: Box | None = None  # the part kept, of a thin image not reduced (tensorize.seen_box)
    size: tuple[int, int] | None = None  # as stored, where Pillow's is upright (a TIFF's)
    # 16-bit gray: the peak only chooses between values as they are (all under 256) and a
    # shift by 8, so the bands are reduced once assuming the shift, while the peak is taken,
    # and again only when it is under 256. The peak's pass of its own decoded every band
    # twice: a 600,000x64 16-bit PNG took 3.2 s under load (round 35).
    sixteen: bool = False

    def reduce(self, img: Image.Image, factor: int, cmyk: bool = False) -> Image.Image:
        """`img` (opened, not loaded) reduced by `factor` in its working mode (`cmyk`: a CMYK
        image stays CMYK, app.pixels.working_mode)."""
        small = self.reduced(factor) if self.reduced is not None else None
        if small is not None:
            return small
        if self.strips is None:
            img.load()
            return reduce_and_convert(img, factor, cmyk=cmyk)
        size = self.size or img.size
        rows = strip_rows(size[0], factor)
        if self.sixteen:
            seen = [0]
            out = reduce_and_convert(
                img, factor, _peak_taken(self.strips(rows), seen), 65535, self.box, size, cmyk
            )
            if seen[0] > 255:
                return out
            return reduce_and_convert(img, factor, self.strips(rows), seen[0], self.box, size, cmyk)
        peak = self.peak(rows)
        return reduce_and_convert(img, factor, self.strips(rows), peak, self.box, size, cmyk)


def _peak_taken(strips: Strips, seen: list[int]) -> Strips:
    """The strips, their largest value kept in seen[0] as they pass."""
    for top, strip in strips:
        seen[0] = max(seen[0], int(np.asarray(strip).max()))
        yield top, strip


def plan(data: bytes, img: Image.Image, factor: int, spec: InputSpec | None = None) -> Plan | None:
    box = seen_box(spec, *img.size) if spec is not None and factor == 1 else None
    tiff = tiff_layout(data, img, factor, cropped=box is not None)
    if tiff is not None:
        return _tiff_plan(tiff, img, spec if factor == 1 else None)
    layout = layout_for_bands(data, img, factor, cropped=box is not None)
    if layout is not None:
        sixteen = (layout.depth, layout.color) == (16, 0)  # its only gray kind wider than 8 bits
        return Plan(partial(bands, layout), _no_peak, box=box, sixteen=sixteen)
    w, h = img.size
    large = w * h * 4 > MIN_BYTES
    if img.format == "AVIF" and img.mode in ("RGB", "RGBA"):  # any size: planes and a strip
        decoder: Any = getattr(img, "_decoder", None)
        if callable(getattr(decoder, "get_frame", None)):
            return Plan(partial(_avif_strips, data, img), _no_peak)
    heif = getattr(img, "_heif_file", None) if img.format == "HEIF" else None
    if heif is not None and img.mode in ("RGB", "RGBA", "L"):  # libheif's picture, viewed
        return Plan(partial(_heif_strips, img), _no_peak)
    if img.format != "WEBP" or getattr(img, "n_frames", 1) != 1:
        return None
    decoder = getattr(img, "_decoder", None)  # Pillow's WebPAnimDecoder, once opened
    strips = None
    if large and callable(getattr(decoder, "get_next", None)) and img.mode in ("RGB", "RGBA"):
        strips = partial(_webp_strips, img)  # else another Pillow: its own load
    features = still_features(data) if factor > 1 or large else None
    if features is None or (features.width, features.height) != img.size:
        return None if strips is None else Plan(strips, _no_peak)
    return Plan(strips, _no_peak, partial(_webp_reduced, data, img))


def _tiff_plan(layout: TiffLayout, img: Image.Image, spec: InputSpec | None) -> Plan:
    """Bands of a TIFF page as stored (Pillow's size is upright: its loader turns the page)."""
    wide = img.mode == "F" or img.mode.startswith("I")
    peak = partial(gray_peak, layout) if wide else _no_peak
    box = seen_box(spec, *layout.size) if spec is not None else None
    sixteen = img.mode.startswith("I;16")
    return Plan(partial(tiff_bands, layout), peak, box=box, size=layout.size, sixteen=sixteen)


def _webp_reduced(data: bytes, img: Any, factor: int) -> Image.Image | None:
    small = decode_reduced(data, img.mode, img.size, factor)
    if small is not None:
        img._decoder = None  # Pillow's decoder and its (untouched) canvases go now
    return small


def _webp_strips(img: Any, rows: int) -> Strips:
    frame, _ = img._decoder.get_next()  # bytes, 4 per pixel (RGBA, or RGBX for RGB)
    img._decoder = None  # its canvas (a full copy) goes now; `img` is closed unloaded
    yield from _frame_strips(frame, img.mode, img.rawmode, img.size, 4, rows)


def _avif_strips(data: bytes, img: Any, rows: int) -> Strips:
    """An AVIF's first frame in strips: converted to RGB a strip at a time from libavif's
    planes (app.avif_strips: a 13 MP AVIF adds 27 MiB to a worker, 99 through Pillow's decode;
    12-bit 4:4:4, 87 against 158). Where that libavif is not one known there, read in strips
    from the copy Pillow's decoder hands back (it copies no further)."""
    w, h = img.size
    with avif_frame(data) as frame:
        want = (w, h, img.mode == "RGBA")
        if frame is not None and (frame.width, frame.height, frame.alpha) == want:
            img._decoder = None  # Pillow's (parsed only) decoder goes; `img` is closed unloaded
            for top, strip in frame.strips(rows):
                yield top, Image.frombuffer(img.mode, (w, len(strip)), strip, "raw", img.mode, 0, 1)
            return
    pixels = img._decoder.get_frame(0)[0]
    img._decoder = None  # libavif's decoded planes go now
    yield from _frame_strips(pixels, img.mode, img.mode, img.size, len(img.mode), rows)


def _heif_strips(img: Any, rows: int) -> Strips:
    """A HEIC's primary picture in strips, each a view of the RGB(A) picture libheif decodes
    (pi-heif's `data`, rows `stride` bytes apart): Pillow's load copied it whole, 8.2 bytes a
    pixel at peak for a 13 MP HEIC against 4.5-5 (YUV planes, then the picture)."""
    frame = img._heif_file[img.tell()]
    pixels, (w, h), stride = frame.data, frame.size, frame.stride  # `data` decodes
    img._heif_file = None  # the file's parsed boxes go; `frame` holds the picture
    if (w, h) != img.size or frame.mode != img.mode:
        raise ValueError("libheif decoded a picture of another size or mode than declared")
    yield from _frame_strips(pixels, img.mode, img.mode, img.size, len(img.mode), rows, stride)


def _frame_strips(
    frame: Any,
    mode: str,
    rawmode: str,
    size: tuple[int, int],
    per_pixel: int,
    rows: int,
    stride: int = 0,
) -> Strips:
    """(top, strip) pairs of a decoder's whole frame (bytes, `per_pixel` a pixel; rows packed,
    or `stride` bytes apart), each strip a view of it made an image: no copy of the frame."""
    w, h = size
    packed, stride = stride == 0, stride or w * per_pixel
    fits = len(frame) == h * stride if packed else len(frame) >= h * stride
    if not isinstance(frame, (bytes, memoryview)) or stride < w * per_pixel or not fits:
        raise ValueError("the decoder returned a frame of an unexpected size")
    pixels = np.frombuffer(frame, dtype=np.uint8)  # a view: no copy
    for top in range(0, h, rows):
        n = min(rows, h - top)
        part = pixels[top * stride : (top + n) * stride]
        yield top, Image.frombuffer(mode, (w, n), part, "raw", rawmode, stride, 1)


def _no_peak(rows: int) -> None:
    """No gray image wider than 8 bits: nothing to scale."""
    return None
