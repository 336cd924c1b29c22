"""Decode a large PNG a band of rows at a time, so it never exists at full size.

Pillow decodes a PNG whole: a 40 MP RGBA one took 160 MB before app.pixels could reduce it,
the largest single cost of any accepted request (bench/peak_memory.py). PNG rows are filtered
against the row above, so a band cannot be decoded alone; but it can as part of a small PNG
whose first row is the previous band's last row, unfiltered. `bands` inflates the image data
(zlib, bounded), and hands each band of filtered rows, behind that context row, to Pillow as
such a PNG (same header, palette and transparency; stored, not compressed, so the copy costs
a memcpy). Pillow does every filter, palette and mode exactly as for the whole image. One
too thin to be reduced (100x400,000) goes this way when its bands are converted (alpha, a
palette, 16 bits): app.pixels flattens each band, so no full-size image with alpha is made.

Only non-interlaced, single-frame PNGs of 8-bit or 16-bit samples go this way. Image data
after the first run of IDAT chunks is ignored, as Pillow's decoder ignores it (a file whose
first run lacks rows is a 422 either way). The next band
needs this band's last row as stored: 8-bit and 16-bit gray rows come back from Pillow byte
for byte (`tobytes`); of 16-bit colour Pillow would keep each sample's high byte only, so such a
band is split into the 8-bit pictures of its high and its low bytes (`_split`: PNG filters
work byte by byte, so each is a filtered 8-bit picture of its own), and the high one is the
band. 1-4 bit, interlaced and animated ones are decoded whole as before.
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
_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
Bytes = bytes | memoryview
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
            (depth == 8 and self.color in _CHANNELS) or (depth == 16 and self.color != 3)
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
            if kind == b"IDAT" and ended:
                pass  # a second run of image data: Pillow's decoder stops at the first's end
            elif kind == b"IDAT":
                self.idat.append(view[pos + 8 : min(end - 4, len(data))])
            elif kind == b"IEND":
                break
            elif kind != b"IHDR":
                (self.after if self.idat else self.before).append(data[pos:end])
            ended = ended or (bool(self.idat) and kind != b"IDAT")
            pos = end

    @property
    def context(self) -> list[bytes]:
        """The chunks a band needs to decode as the whole image does."""
        return [c for c in self.before if c[4:8] in _CONTEXT_CHUNKS]

    @property
    def row_bytes(self) -> int:
        return int(self.width * _CHANNELS[self.color] * (self.depth // 8))


def layout_for_bands(
    data: bytes, img: Image.Image, factor: int, *, cropped: bool = False
) -> _Layout | None:
    """The layout `bands` decodes this opened (not loaded) image from, reduced by `factor`,
    or None when it is decoded whole. Its EXIF block is put where Pillow looks (info), which
    it otherwise finds by decoding the whole image (an eXIf chunk may follow the pixels).
    One not reduced (a thin one) goes by bands only when they are converted: an 'L' or 'RGB'
    image decoded whole is the result itself, a band decode would build the same again,
    unless only a part of it is kept (`cropped`: a thin picture a centre crop sees a square of)."""
    if img.format != "PNG" or factor < 1 or not data.startswith(SIGNATURE):
        return None
    if factor == 1 and img.mode in ("L", "RGB") and not cropped:
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
            *_chunk(b"IHDR", header),
            *layout.before,
            *_chunk(b"IDAT", zlib.compress(pixel)),
            *layout.after,
            *_chunk(b"IEND", b""),
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


def _chunk(kind: bytes, body: bytes) -> list[bytes]:
    crc = zlib.crc32(body, zlib.crc32(kind))
    return [struct.pack(">I4s", len(body), kind), body, struct.pack(">I", crc)]


_STORED: Final = 65535  # bytes in one stored (not compressed) deflate block at most


def _band_png(layout: _Layout, depth: int, payload: list[Bytes]) -> bytes:
    """A PNG of the filtered rows in `payload` (whole rows, in parts) at `depth` bits a sample.
    The rows are copied once, into the PNG (zlib.compress at level 0, then the chunk and the
    file, copied them three times)."""
    size = sum(len(part) for part in payload)
    rows = size // (1 + layout.width * _CHANNELS[layout.color] * depth // 8)
    header = struct.pack(">IIBBBBB", layout.width, rows, depth, layout.color, 0, 0, 0)
    stream = _stored_stream(payload)
    crc = zlib.crc32(b"IDAT")
    for part in stream:
        crc = zlib.crc32(part, crc)
    length = sum(len(part) for part in stream)
    head = [SIGNATURE, *_chunk(b"IHDR", header), *layout.context]
    idat = [struct.pack(">I4s", length, b"IDAT"), *stream, struct.pack(">I", crc)]
    return b"".join([*head, *idat, *_chunk(b"IEND", b"")])


def _stored_stream(payload: list[Bytes]) -> list[Bytes]:
    """A zlib stream of `payload` (in parts) as stored deflate blocks framed around views of
    the parts: nothing is copied until the pieces are joined."""
    parts = [memoryview(part) for part in payload]
    blocks = [part[i : i + _STORED] for part in parts for i in range(0, len(part), _STORED)]
    stream: list[Bytes] = [b"\x78\x01"]  # zlib header: deflate, 32 KB window, no dictionary
    adler = 1
    for k, block in enumerate(blocks):
        size = len(block)
        stream += [struct.pack("<BHH", k == len(blocks) - 1, size, size ^ 0xFFFF), block]
        adler = zlib.adler32(block, adler)
    stream.append(struct.pack(">I", adler))
    return stream


def bands(layout: _Layout, rows: int) -> Iterator[tuple[int, Image.Image]]:
    """(top, band) pairs covering the PNG (`layout_for_bands`), `rows` rows each (the last
    may have fewer); each band is decoded in the mode the whole image has. Damaged or missing
    image data ends the decoded rows, and the rest are zeros, as Pillow leaves them when it
    decodes the whole image (the server has always served such a PNG's readable part)."""
    stride = 1 + layout.row_bytes  # a filter-type byte, then the row
    pieces = _inflate(layout.idat, rows * stride)
    pending = bytearray()
    above = b""  # the previous band's last row, unfiltered (filter type 0)
    top, damaged = 0, False
    while top < layout.height:
        n = min(rows, layout.height - top)
        if len(pending) < n * stride and not damaged:
            try:
                pending += next(pieces)
                continue
            except (StopIteration, zlib.error):
                damaged = True
        # Rows the data lacks are zeros (filter type 0), so that every band has its `rows`:
        # strips are reduced by a factor that divides them (a short band's reduced last row
        # was overwritten by the next band's).
        got = min(n, len(pending) // stride)
        with memoryview(pending) as view:
            band, last = _decode(
                layout,
                above,
                [view[: got * stride], bytes((n - got) * stride)],
                top + n < layout.height,
            )
        del pending[: got * stride]
        if last is None:
            damaged = True
            pending.clear()
        else:
            above = last
        yield top, band
        top += n


def _decode(
    layout: _Layout, above: bytes, filtered: list[Bytes], more: bool
) -> tuple[Image.Image, bytes | None]:
    """(band, its last row as stored), or (the rows decoded, None) where Pillow stopped.
    `filtered`: the band's rows as the file stores them, in parts; `more`: whether a band
    follows (the last one's row is needed by none)."""
    payload = [b"\x00" + above if above else b"", *filtered]
    n = sum(len(part) for part in filtered) // (1 + layout.row_bytes)
    if layout.depth == 8 or layout.color == 0:
        band, whole = _unfiltered(layout, layout.depth, payload, n)
        last = band.crop((0, n - 1, layout.width, n))
        stored = last.tobytes() if layout.depth == 8 else last.tobytes("raw", "I;16B")
        return band, stored if whole else None
    high, low = _split(layout, payload, more)
    band, whole = _unfiltered(layout, 8, [high], n)
    if not whole:
        return band, None
    if not more:
        return band, b""
    rows = len(low) // (1 + layout.row_bytes // 2)
    lows, _ = _unfiltered(layout, 8, [low], rows)  # the band's filter types: whole too
    ends = [np.asarray(im.crop((0, im.height - 1, layout.width, im.height))) for im in (band, lows)]
    return band, np.stack(ends, axis=-1).tobytes()  # each sample's high byte, then its low


def _unfiltered(
    layout: _Layout, depth: int, payload: list[Bytes], keep: int
) -> tuple[Image.Image, bool]:
    """The last `keep` of the filtered rows in `payload`, decoded by Pillow, and whether it
    decoded them all (a bad filter type stops it; the rows after are zeros)."""
    png = _band_png(layout, depth, payload)
    with Image.open(io.BytesIO(png), formats=["PNG"]) as img:
        try:
            img.load()
            whole = True
        except OSError:  # a bad filter type, say; the image holds what came before it
            whole = False
        w, h = img.size
        return (img.crop((0, h - keep, w, h)) if keep < h else img.copy()), whole


def _split(layout: _Layout, payload: list[Bytes], more: bool) -> tuple[memoryview, memoryview]:
    """16-bit colour rows (`payload`: whole filtered rows, in parts) as two 8-bit pictures'
    filtered rows: the samples' high bytes, and their low bytes from the last row that needs no
    row above it (filter None or Sub; the context row is one), all the next band needs (none
    when no band follows: `more`). A
    filter's byte to the left is a whole pixel back, the same sample's byte of the pixel
    before, so each is a PNG of its own with the rows' filter types. Pillow unfilters as many
    bytes as in one decode, not two: a 40 MP 16-bit RGBA PNG filtered Paeth 3.3 -> 2.0 s,
    its rows filtered Sub 2.0 -> 1.2 s in-process."""
    stride, half = 1 + layout.row_bytes, 1 + layout.row_bytes // 2
    parts = [np.frombuffer(part, np.uint8).reshape(-1, stride) for part in payload if len(part)]
    types = np.concatenate([part[:, 0] for part in parts])
    free = np.flatnonzero(types <= 1)
    skip = int(free[-1]) if free.size else 0  # none: the image's first row, zeros above it
    skip = skip if more else len(types)
    high = np.empty((len(types), half), np.uint8)
    low = np.empty((len(types) - skip, half), np.uint8)
    top = 0
    for part in parts:
        end = top + len(part)
        high[top:end, 0], high[top:end, 1:] = part[:, 0], part[:, 1::2]
        if end > skip:
            rest = part[max(0, skip - top) :]
            at = max(top, skip) - skip
            low[at : at + len(rest), 0], low[at : at + len(rest), 1:] = rest[:, 0], rest[:, 2::2]
        top = end
    return high.reshape(-1).data, low.reshape(-1).data
