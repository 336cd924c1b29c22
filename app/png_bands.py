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
from typing import Any, Final

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
        self.before: list[bytes] = []  # every chunk between the header and the pixels (whole)
        self.after: list[bytes] = []  # and after them (Pillow reads those as it loads)
        self.idat: list[memoryview] = []
        view, pos, ended = memoryview(data), 8, False
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            end = pos + 12 + length
            if kind == b"acTL":  # animated: Pillow's frame handling applies
                self.eligible = False
            if kind == b"IDAT" and ended:  # image data in two runs: Pillow's error applies
                self.eligible = False
            elif kind == b"IDAT":
                self.idat.append(view[pos + 8 : min(end - 4, len(data))])
            elif kind == b"IEND":
                break
            elif kind != b"IHDR":
                (self.after if self.idat else self.before).append(data[pos:end])
            ended = bool(self.idat) and kind != b"IDAT"
            pos = end

    @property
    def context(self) -> list[bytes]:
        """The chunks a band needs to decode as the whole image does."""
        return [c for c in self.before if c[4:8] in _CONTEXT_CHUNKS]

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
    try:
        info = _metadata(layout)
    except Exception:  # Pillow's chunk readers raise many types: the whole decode says why
        return None
    for key, value in info.items():  # what was read before the pixels stays, as for Pillow
        img.info.setdefault(key, value)
    img.info.setdefault("exif", None)  # read: Pillow now falls back on text chunks, XMP
    return layout


def _metadata(layout: _Layout) -> dict[Any, Any]:
    """What Pillow's info holds once the image is loaded (EXIF, text, XMP, wherever their
    chunks are): read from a 1x1 PNG with the same chunks around one row of pixels."""
    header = struct.pack(">IIBBBBB", 1, 1, layout.depth, layout.color, 0, 0, 0)
    pixel = bytes(1 + _CHANNELS[layout.color] * layout.depth // 8)
    png = b"".join(
        [
            SIGNATURE,
            _chunk(b"IHDR", header),
            *layout.before,
            _chunk(b"IDAT", zlib.compress(pixel)),
            *layout.after,
            _chunk(b"IEND", b""),
        ]
    )
    with Image.open(io.BytesIO(png), formats=["PNG"]) as probe:
        probe.load()
        return dict(probe.info)


def _inflate(parts: list[memoryview], limit: int) -> Iterator[bytes]:
    """The zlib stream spread over `parts`, inflated in pieces of at most `limit` bytes. A
    stream the file cuts short is an error (a 422, as Pillow's "truncated"); one that ends
    before the last row is not (Pillow leaves the rows it lacks blank)."""
    stream = zlib.decompressobj()
    for part in parts:
        chunk = stream.decompress(part, limit)
        while chunk:
            yield chunk
            chunk = stream.decompress(stream.unconsumed_tail, limit)
        if stream.eof:
            return
    raise ValueError("the PNG file ends inside its image data")


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
    may have fewer); each band is decoded in the mode the whole image has. Damaged or missing
    image data ends the decoded rows, and the rest are zeros, as Pillow leaves them when it
    decodes the whole image (the server has always served such a PNG's readable part)."""
    stride = 1 + layout.row_bytes  # a filter-type byte, then the row
    want = rows * stride
    pieces = _inflate(layout.idat, want)
    pending = bytearray()
    above = b""  # the previous band's last row, unfiltered (filter type 0)
    top, damaged = 0, False
    while top < layout.height:
        short = len(pending) < want and top + len(pending) // stride < layout.height
        if short and not damaged:
            try:
                pending += next(pieces)
                continue
            except (StopIteration, zlib.error):
                damaged = True
        n = min(rows, layout.height - top, len(pending) // stride)
        if n:
            band, whole = _decode(layout, above, bytes(pending[: n * stride]), n)
            del pending[: n * stride]
            if not whole:
                damaged = True
                pending.clear()
        else:  # nothing left to decode: rows of zeros (filter type 0)
            n = min(rows, layout.height - top)
            band, _ = _decode(layout, b"", bytes(n * stride), n)
        yield top, band
        top += n
        last = band.crop((0, n - 1, layout.width, n))
        above = last.tobytes("raw", "I;16B") if layout.depth == 16 else last.tobytes()


def gray16_peak(layout: _Layout, rows: int) -> int | None:
    """A 16-bit gray image's largest value (it sets the image's scale onto 8 bits: a pass of
    its own, as the whole decode's extrema are), or None for any other image."""
    if layout.depth != 16:
        return None
    return max(int(np.asarray(band).max()) for _, band in bands(layout, rows))


def _decode(layout: _Layout, above: bytes, filtered: bytes, n: int) -> tuple[Image.Image, bool]:
    """(band, whether it decoded whole); a band Pillow stops in keeps the rows decoded."""
    context = b"\x00" + above if above else b""
    png = _band_png(layout, n + (1 if above else 0), context + filtered)
    whole = True
    with Image.open(io.BytesIO(png), formats=["PNG"]) as img:
        try:
            img.load()
        except OSError:  # a bad filter type, say; the image holds what came before it
            whole = False
        band = img.crop((0, 1, layout.width, n + 1)) if above else img.copy()
    return band, whole
