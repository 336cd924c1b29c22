"""Decode a still WebP once, straight at a reduced size, with libwebp's own rescaler.

Pillow reads a WebP through libwebp's animation decoder, which fills two full RGBA canvases
and hands back a third copy: a 39 MP photo took a worker up by about 450 MiB even read in
strips (app.strip_plans). libwebp's advanced API decodes into a buffer we own, rescaling
as it goes (`options.use_scaling`): a lossy picture is decoded a row of macroblocks at a time
and nothing full-size exists; a lossless one keeps its one ARGB copy inside libwebp.

It calls, through ctypes, the libwebp that Pillow's `_webp` extension loaded (or another of
the same ABI). Whatever is unexpected (no library, another ABI major, an animation, a status
other than damaged data) answers None and the caller decodes as before; damaged data raises
DamagedWebP, which decoding turns into the same 422 as Pillow's own failure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import re
from ctypes import c_int, c_size_t, c_uint32, c_void_p
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# decode.h's WEBP_DECODER_ABI_VERSION (libwebp 0.5 to 1.6 at least): the Internal entry
# points refuse a caller whose major (the high byte) differs from the library's.
ABI_VERSION: Final = 0x0209
_MODE_RGB: Final = 0  # WEBP_CSP_MODE
_MODE_RGBA_PREMULTIPLIED: Final = 7  # MODE_rgbA: colour premultiplied by alpha, as 'RGBa'
_OK: Final = 0  # VP8StatusCode
# VP8_STATUS_OUT_OF_MEMORY (sizes in a damaged header: Pillow's decode failed on every one of
# 424 such mutated files, round 34), BITSTREAM_ERROR, NOT_ENOUGH_DATA
_DAMAGED: Final = frozenset({1, 3, 7})

# The structs as decode.h declares them (field for field, same order; C enums are ints).
# Sizes on LP64 (x86_64, aarch64), asserted in tests/app/test_webp_scaled.py, by hand:
# features 5 ints + 5 uint32 = 40; RGBA buffer 8 (pointer) + 4 (int) + 4 (alignment) +
# 8 (size_t) = 24; YUVA buffer 4 pointers + 4 ints + 4 size_t = 32 + 16 + 32 = 80, so the
# union is 80; dec buffer 4 ints (16) + union (80) + uint32 pad[4] (16) + a pointer (8) =
# 120; options 14 ints + uint32 pad[5] = 56 + 20 = 76; config 40 + 120 (at offset 40, already
# 8-aligned) + 76 = 236, rounded up to the 8-byte alignment of its pointers: 240.


class Features(ctypes.Structure):
    _fields_ = [
        ("width", c_int),
        ("height", c_int),
        ("has_alpha", c_int),
        ("has_animation", c_int),
        ("format", c_int),  # 0 mixed or undefined, 1 lossy, 2 lossless
        ("pad", c_uint32 * 5),
    ]


class RGBABuffer(ctypes.Structure):
    _fields_ = [("rgba", c_void_p), ("stride", c_int), ("size", c_size_t)]


class YUVABuffer(ctypes.Structure):
    _fields_ = [
        ("y", c_void_p),
        ("u", c_void_p),
        ("v", c_void_p),
        ("a", c_void_p),
        ("y_stride", c_int),
        ("u_stride", c_int),
        ("v_stride", c_int),
        ("a_stride", c_int),
        ("y_size", c_size_t),
        ("u_size", c_size_t),
        ("v_size", c_size_t),
        ("a_size", c_size_t),
    ]


class BufferUnion(ctypes.Union):
    _fields_ = [("RGBA", RGBABuffer), ("YUVA", YUVABuffer)]


class DecBuffer(ctypes.Structure):
    _fields_ = [
        ("colorspace", c_int),
        ("width", c_int),
        ("height", c_int),
        ("is_external_memory", c_int),
        ("u", BufferUnion),
        ("pad", c_uint32 * 4),
        ("private_memory", c_void_p),
    ]


class DecoderOptions(ctypes.Structure):
    _fields_ = [
        ("bypass_filtering", c_int),
        ("no_fancy_upsampling", c_int),
        ("use_cropping", c_int),
        ("crop_left", c_int),
        ("crop_top", c_int),
        ("crop_width", c_int),
        ("crop_height", c_int),
        ("use_scaling", c_int),
        ("scaled_width", c_int),
        ("scaled_height", c_int),
        ("use_threads", c_int),
        ("dithering_strength", c_int),
        ("flip", c_int),
        ("alpha_dithering_strength", c_int),
        ("pad", c_uint32 * 5),
    ]


class DecoderConfig(ctypes.Structure):
    _fields_ = [("input", Features), ("output", DecBuffer), ("options", DecoderOptions)]


class DamagedWebP(ValueError):
    """libwebp found the bitstream damaged or cut short."""


_NAME: Final = re.compile(r"libwebp(-[0-9a-f]+)?\.so(\.\d+)*$")  # not libwebpdemux / mux


def _candidates() -> list[str]:
    """Paths of libwebp to try, the one Pillow's `_webp` loaded first: mapped into this
    process (a wheel's pillow.libs copy, or a system library), then pillow.libs, then the
    system's."""
    try:
        import PIL._webp  # loads its libwebp
    except ImportError:
        return []
    import PIL

    bundled = Path(PIL.__file__).resolve().parent.parent / "pillow.libs"
    found: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                name = line[line.find("/") :].rstrip("\n") if "/" in line else ""
                if _NAME.search(name) and name not in found:
                    found.append(name)
    except OSError:  # not Linux
        pass
    found.sort(key=lambda p: Path(p).parent != bundled)  # Pillow's own copy first
    if bundled.is_dir():
        found += sorted(str(p) for p in bundled.iterdir() if _NAME.search(p.name))
    system = ctypes.util.find_library("webp")
    return found + ([system] if system else [])


@functools.cache
def library() -> ctypes.CDLL | None:
    """libwebp with the four entry points typed, or None (then WebP decodes as before)."""
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.WebPInitDecoderConfigInternal.argtypes = [ctypes.POINTER(DecoderConfig), c_int]
            lib.WebPGetFeaturesInternal.argtypes = [
                ctypes.c_char_p,
                c_size_t,
                ctypes.POINTER(Features),
                c_int,
            ]
            lib.WebPDecode.argtypes = [c_void_p, c_size_t, ctypes.POINTER(DecoderConfig)]
            lib.WebPFreeDecBuffer.argtypes = [ctypes.POINTER(DecBuffer)]
            lib.WebPFreeDecBuffer.restype = None
        except (OSError, AttributeError) as exc:
            logger.debug("libwebp at %s not usable: %s", path, exc)
            continue
        if lib.WebPInitDecoderConfigInternal(ctypes.byref(DecoderConfig()), ABI_VERSION):
            return lib
        logger.info(
            "libwebp at %s has another ABI than %#x; WebP decodes as before", path, ABI_VERSION
        )
    return None


def still_features(data: bytes) -> Features | None:
    """The bitstream's features for a still WebP libwebp can decode here, else None."""
    lib = library()
    if lib is None:
        return None
    features = Features()
    if lib.WebPGetFeaturesInternal(data, len(data), ctypes.byref(features), ABI_VERSION) != _OK:
        return None  # damaged headers: Pillow's decode answers as before
    return None if features.has_animation else features


def frame_span(data: bytes) -> tuple[int, int] | None:
    """(start, end) of the bytes libwebp's demuxer hands its decoder for a still WebP, so that
    damaged data fails (or not) here as it does in Pillow: the first ALPH chunk, if any,
    through the VP8 or VP8L chunk's declared payload. The whole file let a VP8 stream damaged
    at its end read on into the chunks after it and decode (Pillow: a 422)."""
    end_of_riff = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    pos, alpha = 12, -1
    while pos + 8 <= end_of_riff:
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag in (b"VP8 ", b"VP8L"):
            end = pos + 8 + size
            start = alpha if alpha >= 0 and tag == b"VP8 " else pos
            return (start, end) if end <= end_of_riff else None
        if tag == b"ALPH" and alpha < 0:
            alpha = pos
        pos += 8 + size + (size & 1)
    return None


def decode_reduced(
    data: bytes, mode: str, full: tuple[int, int], factor: int
) -> Image.Image | None:
    """The still WebP `data` (`full` its size) reduced by `factor` as Image.reduce reduces:
    ceil(w / factor) x ceil(h / factor), 'RGB' for a Pillow `mode` of 'RGB', 'RGBa'
    (premultiplied, app.pixels' working mode) for 'RGBA'. None: libwebp is missing or
    refused for another reason than the data (decode as before). Raises DamagedWebP for a
    damaged or truncated bitstream.

    libwebp crops to the whole boxes and scales by exactly 1/factor (its rescaler then
    averages each box, as a box filter does); the partial boxes of the last column and row
    of Image.reduce are copied from their neighbours. Scaling the whole picture to the ceil
    size instead stretched it by up to a box: 3 grey levels off on average, 120 at edges."""
    lib, span = library(), frame_span(data)
    if lib is None or span is None or mode not in ("RGB", "RGBA"):
        return None
    config = DecoderConfig()
    if not lib.WebPInitDecoderConfigInternal(ctypes.byref(config), ABI_VERSION):
        return None
    (width, height), channels = full, 4 if mode == "RGBA" else 3
    whole = (width // factor, height // factor)  # boxes of factor x factor pixels
    size = (-(-width // factor), -(-height // factor))
    pixels = np.empty((size[1], size[0], channels), dtype=np.uint8)
    out = config.output
    out.colorspace = _MODE_RGBA_PREMULTIPLIED if channels == 4 else _MODE_RGB
    out.is_external_memory = 1
    out.u.RGBA.rgba = pixels.ctypes.data
    out.u.RGBA.stride = size[0] * channels
    out.u.RGBA.size = pixels.nbytes
    options = config.options
    if whole != size:
        options.use_cropping = 1
        options.crop_width, options.crop_height = whole[0] * factor, whole[1] * factor
    if factor > 1:
        options.use_scaling = 1
        options.scaled_width, options.scaled_height = whole
    try:
        start = ctypes.cast(ctypes.c_char_p(data), c_void_p).value or 0  # no copy
        status = lib.WebPDecode(start + span[0], span[1] - span[0], ctypes.byref(config))
    finally:
        lib.WebPFreeDecBuffer(ctypes.byref(config.output))
    if status in _DAMAGED:
        raise DamagedWebP(f"libwebp status {status}")
    if status != _OK or (out.width, out.height) != whole:
        logger.info("libwebp scaled decode refused (status %s); decoding as before", status)
        return None
    if size[0] != whole[0]:
        pixels[: whole[1], -1] = pixels[: whole[1], -2]
    if size[1] != whole[1]:
        pixels[-1] = pixels[-2]
    work = "RGBa" if channels == 4 else "RGB"
    return Image.frombuffer(work, size, pixels, "raw", work, 0, 1)
