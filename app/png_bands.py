"""Decode a large 8-bit PNG a band of rows at a time, so it never exists at full size.

Pillow decodes a PNG whole: a 40 MP RGBA one took 160 MB before app.pixels could reduce it,
the largest single cost of any accepted request (bench/peak_memory.py). PNG rows are filtered
against the row above, so a band cannot be decoded alone; but it can as part of a small PNG
whose first row is the previous band's last row, unfiltered. `bands` inflates the image data
(zlib, bounded), and hands each band of filtered rows, behind that context row, to Pillow as
such a PNG (same header, palette and transparency; stored, not compressed, so the copy costs
a memcpy). Pillow does every filter, palette and mode exactly as for the whole image.

Only non-interlaced, single-frame PNGs of 8-bit samples or 16-bit gray go this way: their rows
come back from Pillow byte for byte as stored (`tobytes`), which the next band needs. 16-bit
colour (Pillow keeps 8 of its 16 bits), 1-4 bit, interlaced and animated ones are decoded
whole as before.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import Final

import numpy as np
from PIL import Image

SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel (8-bit)
_CONTEXT_CHUNKS: Final = (b"PLTE", b"tRNS")  # what a band needs to decode as the whole does
# Only images whose decoded size exceeds this go by bands (smaller ones cost little whole).
MIN_BYTES: Final = 32 * 1024 * 1024


class _Layout:
    """What `bands` needs from the file: header fields, the context chunks, the image data."""

    def __init__(self, data: bytes) -> None:
        self.width, self.height, depth, self.color, _, _, interlace = struct.unpack(
            ">IIBBBBB", data[16:29]
        )
        self.depth = depth
        self.eligible = interlace == 0 and (
            (depth == 8 and self.color in _CHANNELS) or (depth == 16 and self.color == 0)
        )
        self.context: list[bytes] = []  # whole chunks (length, type, data, crc)
        self.idat: list[memoryview] = []
        self.exif: bytes | None = None  # an eXIf chunk's body, wherever it is
        view, pos, ended = memoryview(data), 8, False
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            end = pos + 12 + length
            if kind == b"acTL":  # animated: Pillow's frame handling applies
                self.eligible = False
            elif kind in _CONTEXT_CHUNKS and not self.idat:
                self.context.append(data[pos:end])
            elif kind == b"IDAT" and not ended:  # the image data is one run of IDAT chunks
                self.idat.append(view[pos + 8 : min(end - 4, len(data))])
            elif kind == b"eXIf" and self.exif is None:
                self.exif = data[pos + 8 : end - 4]
            elif kind == b"IEND":
                break
            ended = bool(self.idat) and kind != b"IDAT"
            pos = end

    @property
    def row_bytes(self) -> int:
        return int(self.width * _CHANNELS[self.color] * (self.depth // 8))


def layout_for_bands(data: bytes, img: Image.Image, factor: int) -> _Layout | None:
    """The layout `bands` decodes this opened (not loaded) image from, reduced by `factor`,
    or None when it is decoded whole. Its EXIF block is put where Pillow looks (info), which
    it otherwise finds by decoding the whole image (an eXIf chunk may follow the pixels)."""
    if img.format != "PNG" or factor <= 1 or not data.startswith(SIGNATURE):
        return None
    w, h = img.size
    if w * h * 4 <= MIN_BYTES or img.mode not in ("L", "LA", "RGB", "RGBA", "P", "I;16"):
        return None
    layout = _Layout(data)
    if not layout.eligible or (layout.width, layout.height) != (w, h):
        return None
    if "exif" not in img.info:  # as Pillow's eXIf reader stores it
        body = layout.exif or b""
        img.info["exif"] = b"Exif\x00\x00" + body.removeprefix(b"Exif\x00\x00") if body else b""
    return layout


def _inflate(parts: list[memoryview], limit: int) -> Iterator[bytes]:
    """The zlib stream spread over `parts`, inflated in pieces of at most `limit` bytes."""
    stream = zlib.decompressobj()
    for part in parts:
        chunk = stream.decompress(part, limit)
        while chunk:
            yield chunk
            chunk = stream.decompress(stream.unconsumed_tail, limit)
        if stream.eof:
            return


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _band_png(layout: _Layout, rows: int, payload: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", layout.width, rows, layout.depth, layout.color, 0, 0, 0)
    return b"".join(
        [
            SIGNATURE,
            _chunk(b"IHDR", header),
            *layout.context,
            _chunk(b"IDAT", zlib.compress(payload, 0)),
            _chunk(b"IEND", b""),
        ]
    )


def bands(layout: _Layout, rows: int) -> Iterator[tuple[int, Image.Image]]:
    """(top, band) pairs covering the PNG (`layout_for_bands`), `rows` rows each (the last
    may have fewer); each band is decoded in the mode the whole image has."""
    stride = 1 + layout.row_bytes  # a filter-type byte, then the row
    want = rows * stride
    pending = bytearray()
    above = b""  # the previous band's last row, unfiltered (filter type 0)
    top = 0
    for piece in _inflate(layout.idat, want):
        pending += piece
        while len(pending) >= want or (top + len(pending) // stride >= layout.height > top):
            n = min(rows, layout.height - top, len(pending) // stride)
            band = _decode(layout, above, bytes(pending[: n * stride]), n)
            del pending[: n * stride]
            yield top, band
            top += n
            if top >= layout.height:
                return
            last = band.crop((0, n - 1, layout.width, n))
            above = last.tobytes("raw", "I;16B") if layout.depth == 16 else last.tobytes()
    raise ValueError(f"PNG image data ends after {top} of {layout.height} rows")


def gray16_peak(layout: _Layout, rows: int) -> int | None:
    """A 16-bit gray image's largest value (it sets the image's scale onto 8 bits: a pass of
    its own, as the whole decode's extrema are), or None for any other image."""
    if layout.depth != 16:
        return None
    return max(int(np.asarray(band).max()) for _, band in bands(layout, rows))


def _decode(layout: _Layout, above: bytes, filtered: bytes, n: int) -> Image.Image:
    context = b"\x00" + above if above else b""
    png = _band_png(layout, n + (1 if above else 0), context + filtered)
    with Image.open(io.BytesIO(png), formats=["PNG"]) as img:
        img.load()
        band = img.crop((0, 1, layout.width, n + 1)) if above else img.copy()
    return band
