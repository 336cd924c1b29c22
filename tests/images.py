"""Build test images (real photos re-encoded, edge cases crafted byte by byte)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_with_header(width: int, height: int) -> bytes:
    """A syntactically valid PNG header claiming any dimensions, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def fashion_png(x: np.ndarray) -> bytes:
    """A 28x28 gray test-split image as PNG bytes."""
    return encode(Image.fromarray(np.asarray(x).squeeze().astype(np.uint8), mode="L"), "PNG")


def photo(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()
