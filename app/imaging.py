"""Image ingestion, one policy: bytes -> sniffed format -> upright RGB/gray array at model size.

Pillow + numpy only. Every failure is a typed ServiceError (413/415/422), never a crash.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from app.bundle import InputSpec
from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from app.trim import trim_and_centre

ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED_TEXT: Final = "JPEG, PNG, WebP, GIF (first frame), BMP or TIFF"

_RESAMPLE: Final = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
# EXIF orientation tag and the transform each value stands for (for reporting only).
_ORIENTATION_TAG: Final = 0x0112
# Decode JPEGs at reduced scale once they are at least this many times the model input.
_DRAFT_FACTOR: Final = 2


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 8


@dataclass(frozen=True)
class ImageInfo:
    """What was decoded, reported back to the client."""

    format: str
    width: int
    height: int
    mode: str
    orientation: int  # EXIF orientation value that was applied (1 = none)
    frames: int
    decoded_width: int  # size actually decoded (smaller than width/height after a JPEG draft)
    decoded_height: int
    inverted: bool = False  # gray levels inverted (the bundle's input.invert)


@dataclass(frozen=True)
class PreparedImage:
    array: npt.NDArray[np.float32]  # H x W x C, ready for the model
    info: ImageInfo
    decode_ms: float
    preprocess_ms: float


def sniff_format(data: bytes) -> str | None:
    """Identify the container from magic bytes; the client's content type is never trusted."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def _describe(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML document"
    if head.startswith(b"<?xml") or head.startswith(b"<svg"):
        return "an XML/SVG document (vector images are not accepted)"
    if head.startswith(b"%pdf"):
        return "a PDF document"
    if data[:4] == b"RIFF" or data[4:8] == b"ftyp":
        return "a media container that is not a still image (HEIC/AVIF/video are not accepted)"
    try:
        data[:256].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def open_image(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str]:
    """Sniff, open (header only) and check dimensions. Raises 413/415/422."""
    if not data:
        raise InvalidImage(f"The request contained no image data; send a {ACCEPTED_TEXT} file.")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"The image is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes.",
            limit_bytes=limits.max_bytes,
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(
            f"The upload is {_describe(data)}, not an image. Accepted: {ACCEPTED_TEXT}.",
            accepted=list(ACCEPTED_FORMATS),
        )
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(
            f"The image's dimensions exceed the limit of {limits.max_pixels:,} pixels.",
            limit_pixels=limits.max_pixels,
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(
            f"The data starts like a {fmt} file but could not be read: {exc}."
        ) from exc
    w, h = img.size
    if w * h > limits.max_pixels:
        raise PayloadTooLarge(
            f"The image is {w}x{h} = {w * h:,} pixels; the limit is {limits.max_pixels:,}.",
            limit_pixels=limits.max_pixels,
        )
    if min(w, h) < limits.min_side:
        raise InvalidImage(
            f"The image is {w}x{h} pixels; both sides must be at least {limits.min_side} pixels."
        )
    return img, fmt


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer or float gray images -> 8-bit 'L'."""
    arr = np.asarray(img, dtype=np.float64)
    peak = float(arr.max()) if arr.size else 0.0
    if img.mode == "F" and peak <= 1.0:
        arr = arr * 255.0
    elif peak > 255.0:
        arr = arr / 257.0  # 16-bit range (0..65535) onto 0..255
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite any transparency on white and return an 'RGB' or 'L' image."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(background, rgba)
        return out.convert("L" if img.mode in ("LA", "La") else "RGB")
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _to_8bit(img)
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("L", "RGB"):
        return img
    # CMYK, YCbCr, LAB, HSV, RGBX ...
    return img.convert("RGB")


def decode(data: bytes, spec: InputSpec, limits: ImageLimits) -> tuple[Image.Image, ImageInfo]:
    """Decode to an upright 'RGB' or 'L' image in the bundle's colour space."""
    img, fmt = open_image(data, limits)
    width, height = img.size
    mode = img.mode
    frames = int(getattr(img, "n_frames", 1))
    try:
        if frames > 1:
            img.seek(0)
        if fmt == "JPEG" and (
            width >= _DRAFT_FACTOR * spec.width * 2 and height >= _DRAFT_FACTOR * spec.height * 2
        ):
            # DCT-domain downscale: decoded size stays >= 2x the model input in both sides.
            img.draft(
                "L" if spec.color == "gray" else "RGB",
                (spec.width * _DRAFT_FACTOR, spec.height * _DRAFT_FACTOR),
            )
        img.load()
        orientation = 1
        try:
            orientation = int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
        except Exception:  # broken EXIF must not fail the request
            orientation = 1
        upright = ImageOps.exif_transpose(img) if orientation != 1 else img
        if upright is None:  # pragma: no cover - exif_transpose(in_place=False) returns an image
            upright = img
        flat = _flatten_alpha(upright)
        target = "L" if spec.color == "gray" else "RGB"
        if flat.mode != target:
            flat = flat.convert(target)
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as exc:
        raise InvalidImage(f"The {fmt} image is damaged or truncated: {exc}.") from exc
    info = ImageInfo(
        format=fmt,
        width=width,
        height=height,
        mode=mode,
        orientation=orientation if 1 <= orientation <= 8 else 1,
        frames=frames,
        decoded_width=img.size[0],
        decoded_height=img.size[1],
    )
    return flat, info


# Border median at or above this (0-255) counts as a light background.
LIGHT_BORDER = 128


def _ring_boxes(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """The outer ring of an h x w image (4% of the shorter side, at least 1 px) as four
    non-overlapping (left, top, right, bottom) boxes."""
    t = max(1, round(min(h, w) * 0.04))
    return [(0, 0, w, t), (0, h - t, w, h), (0, t, t, h - t), (w - t, t, w, h - t)]


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
    ring = [np.asarray(img.crop(box)).ravel() for box in _ring_boxes(img.height, img.width)]
    return bool(np.median(np.concatenate(ring)) >= LIGHT_BORDER)


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
        scale = max(tw / w, th / h)
        nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
        scaled = img.resize((nw, nh), method)
        left, top = (nw - tw) // 2, (nh - th) // 2
        return scaled.crop((left, top, left + tw, top + th))
    # letterbox
    scale = min(tw / w, th / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = img.resize((nw, nh), method)
    fill = spec.resize.pad_value
    canvas = Image.new(img.mode, (tw, th), fill if img.mode == "L" else (fill, fill, fill))
    canvas.paste(scaled, ((tw - nw) // 2, (th - nh) // 2))
    return canvas


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


def prepare(data: bytes, spec: InputSpec, limits: ImageLimits) -> PreparedImage:
    """The whole ingestion path for one upload."""
    t0 = time.perf_counter()
    img, info = decode(data, spec, limits)
    t1 = time.perf_counter()
    invert = should_invert(img, spec)  # on the whole picture: trimming removes the border
    if spec.trim:
        img = trim_and_centre(img)
    if invert:
        # Before resizing, so letterbox padding keeps the model's own background value.
        img = ImageOps.invert(img)
        info = replace(info, inverted=True)
    array = to_array(resize(img, spec), spec)
    t2 = time.perf_counter()
    return PreparedImage(
        array=array, info=info, decode_ms=(t1 - t0) * 1e3, preprocess_ms=(t2 - t1) * 1e3
    )
