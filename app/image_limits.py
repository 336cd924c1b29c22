"""The limits on one image and on one request's decoding (413 beyond), and the words that
say which was passed."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

from PIL import Image

from app.decode_guard import DecodeBudget, bmp_run_length
from app.errors import PayloadTooLarge
from app.jpeg_walk import lossless_bytes


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_avif_pixels: int = 13_000_000  # decoded whole, up to 8.5 bytes a pixel (app/formats.py)
    min_side: int = 1  # every valid picture, a 1x1 one included
    # Work per request, all its images together: decoded pixels (a progressive JPEG counts
    # pixels x scans / 10) and seconds spent decoding.
    max_request_pixels: int = 128_000_000
    decode_seconds: float = 5.0
    # Progressive JPEG scans allowed in one file (libjpeg writes 10; each costs a full pass).
    max_jpeg_scans: int = 100
    # Decodes running at once in this process; 0 = one per CPU core.
    decode_concurrency: int = 0

    def budget(self) -> DecodeBudget:
        """A fresh work budget for one request."""
        return DecodeBudget(self.max_request_pixels, self.decode_seconds)


# Decoded whole at full size, whatever the model needs: their own, lower limits.
_WHOLE: Final = {
    "AVIF": ("AVIF is decoded whole", "Send it as JPEG, PNG or WebP."),
    "HEIF": ("HEIC is decoded whole", "Send it as JPEG, PNG or WebP."),
    "animated WebP": (  # libwebp composes frames on two full canvases and copies one out
        "an animated WebP's first frame is composed on full-size canvases",
        "Send its first frame as a still WebP, PNG or JPEG.",
    ),
    "progressive JPEG": (  # its coefficients, 2 bytes a component sample, until the last scan
        "a progressive (or multi-scan) JPEG's coefficients are all held while it decodes, "
        "whatever the scale",
        "Send it as a baseline (sequential) JPEG, or smaller.",
    ),
    "lossless JPEG": (  # no DCT to scale in: Pillow's full-size image, libjpeg's buffer
        "a lossless JPEG cannot be reduced while it decodes, so it is decoded whole at full size",
        "Send it as a baseline JPEG or PNG, or smaller.",
    ),
    "lossless WebP": (  # its backward references reach any pixel decoded before
        "libwebp decodes a lossless WebP whole (4 bytes a pixel) before reducing it",
        "Send it as PNG (decoded in bands), or as a lossy WebP or JPEG.",
    ),
    "interlaced PNG": (  # its passes fill the whole picture: 4 bytes a pixel in colour
        "an interlaced PNG of more than one byte a pixel is decoded whole (4 bytes a pixel in "
        "colour or gray with alpha, 2 in 16-bit gray)",
        "Send it without interlacing (decoded in bands), or as JPEG or WebP.",
    ),
    "run-length-encoded BMP": (  # decoded in Python into a bytearray, then copied
        "a run-length-encoded BMP is decoded whole, in Python (about 3 bytes a pixel)",
        "Send it uncompressed, or as PNG.",
    ),
    "TIFF decoded whole": (  # a 40 MP single LZW strip: +270 MiB (the page and libtiff's strip)
        "its page cannot be decoded a band at a time (strips or rows of tiles over 16 MB "
        "decoded, separate colour planes, old-style JPEG, BigTIFF), so it is decoded whole",
        "Send it in strips of a few MB (most writers' default), or as PNG.",
    ),
}


def pixel_limit(kind: str, limits: ImageLimits, samples: float = 1.0) -> int:
    """The limit for a format, or a kind of it ('animated WebP': half AVIF's, 16 bytes a
    pixel against 8.5; 'lossless WebP', 'interlaced PNG' in colour and 'run-length-encoded
    BMP': twice it, 3-4 bytes a pixel; 'progressive JPEG': 3x AVIF's in component samples, `samples` a pixel, 2 bytes
    each: a 4:2:0 one up to 26 MP (at 40: +118 MiB, the tree to 609 MiB; at 34: 598-607),
    4:4:4 up to 13 MP (at 40: +232 MiB); 'lossless JPEG': the progressive one's 78 MB at 13 MP
    over its own bytes a pixel, gray up to 39 MP, 4:4:4 colour 11 MP; a 'TIFF decoded whole',
    one app.tiff_bands cannot split, AVIF's)."""
    avif = limits.max_avif_pixels
    whole = {
        "AVIF": avif,
        "HEIF": avif,  # libheif: YUV planes, then an RGB picture (5.7 bytes a pixel at peak)
        "animated WebP": avif // 2,
        "lossless WebP": 2 * avif,
        "interlaced PNG": 2 * avif,
        "run-length-encoded BMP": 2 * avif,
        "progressive JPEG": int(3 * avif / max(samples, 1.0)),
        "lossless JPEG": int(6 * avif / lossless_bytes(samples)),
        "TIFF decoded whole": avif,
    }
    return min(limits.max_pixels, whole.get(kind, limits.max_pixels))


def kind_of(
    fmt: str, data: bytes, img: Image.Image, held: float = 0.0, lossless: bool = False
) -> str:
    """The kind an opened (not loaded) picture is limited as: its format, or one of the kinds
    decoded whole above. `held`: a JPEG's component samples a pixel when libjpeg holds all its
    coefficients (app.jpeg_walk), else 0; `lossless`: a JPEG with a lossless frame header."""
    if fmt == "WEBP":
        return webp_kind(data, getattr(img, "n_frames", 1))
    if fmt == "JPEG" and lossless:
        return "lossless JPEG"
    if fmt == "JPEG" and held:
        return "progressive JPEG"
    if fmt == "PNG" and img.info.get("interlace") and img.mode not in ("1", "L", "P"):
        return "interlaced PNG"
    if fmt == "BMP" and bmp_run_length(data):
        return "run-length-encoded BMP"
    return fmt


def webp_kind(data: bytes, frames: int) -> str:
    """'animated WebP', 'lossless WebP' (its image chunk is VP8L) or 'WEBP'."""
    if frames > 1:
        return "animated WebP"
    end, pos = min(len(data), 8 + int.from_bytes(data[4:8], "little")), 12
    while pos + 8 <= end:
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag in (b"VP8 ", b"VP8L"):
            return "lossless WebP" if tag == b"VP8L" else "WEBP"
        pos += 8 + size + (size & 1)
    return "WEBP"


def too_many_pixels(
    w: int, h: int, limits: ImageLimits, kind: str = "", samples: float = 1.0
) -> PayloadTooLarge:
    limit = pixel_limit(kind, limits, samples)
    why, send = _WHOLE.get(kind, ("", ""))
    return PayloadTooLarge(
        f"The {kind.split()[0] if kind.endswith('whole') else kind} image is {w}x{h} = {w * h:,} pixels; {why}, so its limit is {limit:,} "
        f"pixels (other formats: {limits.max_pixels:,}). {send}"
        if limit < limits.max_pixels
        else f"The image is {w}x{h} = {w * h:,} pixels; the limit is {limit:,}.",
        limit_pixels=limit,
    )


def over_pillows_limit(fmt: str, data: bytes, limits: ImageLimits) -> PayloadTooLarge:
    """A header declaring more than twice Pillow's own pixel limit, which Image.open refuses
    before it says the size: the same words as every other image over the limit, with the
    size the header declares (read again by the format's parser alone: the header only)."""
    try:
        factory = Image.OPEN[fmt][0]
        w, h = factory(io.BytesIO(data), "").size
    except Exception:  # the refusal stands without the size
        return PayloadTooLarge(
            f"The image's header declares more than {limits.max_pixels:,} pixels, the limit.",
            limit_pixels=limits.max_pixels,
        )
    return too_many_pixels(w, h, limits)
