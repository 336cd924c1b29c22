"""An AVIF's first frame turned into RGB a strip of rows at a time, from libavif's own planes.

Pillow's decoder converts the whole frame to RGB and then copies it into a `bytes`: with the
YUV planes, three full copies alive at once (a 12.5 MP 8-bit AVIF took a worker up by 98 MiB, a
13 MP 12-bit 4:4:4 one by 150-190 MiB: round 36's attack). Here the libavif inside Pillow's
wheel decodes the frame as Pillow's decoder would (one thread; `pixi` and `clap` checks relaxed
as Pillow relaxes them), and only a strip of rows at a time is converted (a view of the planes,
`avifImageSetViewRect`, then `avifImageYUVToRGB` into a numpy strip): the planes and one strip.
Each view reaches a few rows past its strip, so chroma upsampling sees the neighbours the whole
conversion sees, and the pixels are those of Pillow's decode.

libavif is reached through ctypes. The few struct fields read or written are checked against
the defaults libavif documents (1.x) before anything is decoded; on any mismatch (another
libavif) `avif_frame` returns None and the caller uses Pillow's decode.
"""

from __future__ import annotations

import ctypes
import glob
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

_OK: Final = 0
# avifDecoder's first fields (avif.h 1.x), as int32s: codecChoice, maxThreads, requestedSource,
# allowProgressive, allowIncremental, ignoreExif, ignoreXMP, imageSizeLimit,
# imageDimensionLimit, imageCountLimit, strictFlags; then (8-aligned) the avifImage pointer.
_DECODER_DEFAULTS: Final = {1: 1, 7: 16384 * 16384, 8: 32768}
_MAX_THREADS, _STRICT, _IMAGE_AT = 1, 10, 48
_STRICT_PIXI_CLAP: Final = 1 | 2  # AVIF_STRICT_PIXI_REQUIRED | AVIF_STRICT_CLAP_VALID
_ALPHA_PLANE_AT: Final = 64  # avifImage.alphaPlane: after 6 uint32s, 3 plane pointers, 4 uint32s
_CHROMA_ROWS: Final = 4  # rows each view reaches past its strip (bilinear chroma needs 2)
_RGB, _RGBA = 0, 1  # avifRGBFormat


class _RGBImage(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("depth", ctypes.c_uint32),
        ("format", ctypes.c_int),
        ("chromaUpsampling", ctypes.c_int),
        ("chromaDownsampling", ctypes.c_int),
        ("avoidLibYUV", ctypes.c_int),
        ("ignoreAlpha", ctypes.c_int),
        ("alphaPremultiplied", ctypes.c_int),
        ("isFloat", ctypes.c_int),
        ("maxThreads", ctypes.c_int),
        ("pixels", ctypes.c_void_p),
        ("rowBytes", ctypes.c_uint32),
    ]


class _CropRect(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("x", "y", "width", "height")]


_lib_lock = threading.Lock()
_lib: Any = None
_lib_tried = False


def _load() -> Any:
    """Pillow's libavif (the same file its _avif module uses), set up once; None if absent."""
    global _lib, _lib_tried
    with _lib_lock:
        if _lib_tried:
            return _lib
        _lib_tried = True
        import PIL

        found = sorted(
            glob.glob(str(Path(PIL.__file__).parent.parent / "pillow.libs" / "libavif*"))
        )
        try:
            lib = ctypes.CDLL(found[0]) if found else None
        except OSError:
            lib = None
        if lib is None:
            return None
        lib.avifVersion.restype = ctypes.c_char_p
        if not lib.avifVersion().startswith(b"1."):
            return None
        vp, i32 = ctypes.c_void_p, ctypes.c_int
        for name, res, args in (
            ("avifDecoderCreate", vp, []),
            ("avifDecoderDestroy", None, [vp]),
            ("avifDecoderSetIOMemory", i32, [vp, vp, ctypes.c_size_t]),
            ("avifDecoderParse", i32, [vp]),
            ("avifDecoderNextImage", i32, [vp]),
            ("avifImageCreateEmpty", vp, []),
            ("avifImageDestroy", None, [vp]),
            ("avifImageSetViewRect", i32, [vp, vp, ctypes.POINTER(_CropRect)]),
            ("avifRGBImageSetDefaults", None, [ctypes.POINTER(_RGBImage), vp]),
            ("avifImageYUVToRGB", i32, [vp, ctypes.POINTER(_RGBImage)]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _lib = lib
        return _lib


class AvifFailed(ValueError):
    """libavif could not decode or convert the frame (the file is damaged)."""


@dataclass
class AvifFrame:
    """A decoded first frame (`image`, owned by its decoder): its size and whether it has
    alpha."""

    lib: Any
    image: int
    width: int
    height: int
    alpha: bool

    def strips(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(top, rows x width x 3 or 4 uint8 array) of the frame in 8-bit RGB(A), as Pillow's
        decode gives it. `rows` is rounded up to an even number (4:2:0 views start on one)."""
        rows += rows & 1
        channels = 4 if self.alpha else 3
        view = self.lib.avifImageCreateEmpty()
        if not view:
            raise MemoryError("libavif could not allocate an image view")
        try:
            for top in range(0, self.height, rows):
                n = min(rows, self.height - top)
                first = max(0, top - _CHROMA_ROWS)
                last = min(self.height, top + n + _CHROMA_ROWS)
                out = self._convert(view, first, last - first, channels)
                yield top, out[top - first : top - first + n]
        finally:
            self.lib.avifImageDestroy(view)  # a view owns no planes

    def _convert(self, view: int, top: int, n: int, channels: int) -> np.ndarray:
        rect = _CropRect(0, top, self.width, n)
        if self.lib.avifImageSetViewRect(view, self.image, ctypes.byref(rect)) != _OK:
            raise AvifFailed("libavif refused a view of the frame")
        rgb = _RGBImage()
        self.lib.avifRGBImageSetDefaults(ctypes.byref(rgb), view)
        if (rgb.width, rgb.height, rgb.maxThreads, rgb.pixels) != (self.width, n, 1, None):
            raise AvifFailed("libavif's RGB image is not laid out as expected")
        out = np.empty((n, self.width, channels), dtype=np.uint8)
        rgb.depth, rgb.format = 8, _RGBA if channels == 4 else _RGB
        rgb.pixels, rgb.rowBytes = out.ctypes.data, self.width * channels
        if self.lib.avifImageYUVToRGB(view, ctypes.byref(rgb)) != _OK:
            raise AvifFailed("libavif could not convert the frame to RGB")
        return out


@contextmanager
def avif_frame(data: bytes) -> Iterator[AvifFrame | None]:
    """The first frame of an AVIF decoded by libavif, freed on exit; None when this libavif
    is not one whose layout is known here (the caller then decodes with Pillow). Raises
    AvifFailed when libavif cannot decode the data."""
    lib = _load()
    decoder = lib.avifDecoderCreate() if lib is not None else None
    if not decoder:
        yield None
        return
    try:
        head = (ctypes.c_int32 * 11).from_address(decoder)
        if any(head[i] != v for i, v in _DECODER_DEFAULTS.items()) or head[_STRICT] & 3 != 3:
            yield None
            return
        head[_MAX_THREADS] = 1
        head[_STRICT] &= ~_STRICT_PIXI_CLAP
        buffer = ctypes.c_char_p(data)  # no copy: `data` outlives the decoder
        done = lib.avifDecoderSetIOMemory(decoder, buffer, len(data)) == _OK
        done = done and lib.avifDecoderParse(decoder) == _OK
        if not (done and lib.avifDecoderNextImage(decoder) == _OK):
            raise AvifFailed("libavif could not decode the AVIF")
        image = ctypes.c_void_p.from_address(decoder + _IMAGE_AT).value
        if not image:
            raise AvifFailed("libavif decoded no image")
        width, height = (ctypes.c_uint32 * 2).from_address(image)
        alpha = bool(ctypes.c_void_p.from_address(image + _ALPHA_PLANE_AT).value)
        yield AvifFrame(lib, image, int(width), int(height), alpha)
    finally:
        lib.avifDecoderDestroy(decoder)
