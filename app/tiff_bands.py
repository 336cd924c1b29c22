"""Decode a large TIFF a band of rows at a time, so it never exists at full size.

Pillow decodes a TIFF page whole: a 40 MP one took a worker 168 MiB more, whatever the model
needed (bench/peak_memory.py). A TIFF's strips (or rows of tiles) are compressed one by one,
each on its own, so a band of them is a TIFF of its own: the first page's pixel tags, an
image length of the band's rows and only the band's strips. `bands` hands each such small
TIFF to Pillow, which decodes it with the same code (libtiff or its own) as the whole page;
the rows are then cut into bands of exactly the rows the caller asked for. An uncompressed
page stored as one strip is read as if cut into strips of a few rows (they are, byte for
byte).

Only what can be split this way goes by bands: classic (not Big) TIFF, one sample plane
(chunky, or one sample per pixel), strips or tiles whose decoded rows fit a few MB, and a
band that Pillow opens in the mode and raw mode of the whole page (checked on the first band
before any pixel is decoded). The orientation tag is left out of the bands: the caller turns
the reduced picture (Pillow's loader turns the whole page itself).
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

from app.png_bands import MIN_BYTES

# Tags a band keeps: what tells libtiff and Pillow how the pixels are stored. The rest (the
# orientation, metadata, pointers to other IFDs, offsets into the original file) is left out;
# strip or tile offsets, byte counts, the image length and rows per strip are the band's own.
_PIXEL_TAGS: Final = frozenset(
    {
        256,  # ImageWidth
        258,  # BitsPerSample
        259,  # Compression
        262,  # PhotometricInterpretation
        266,  # FillOrder
        277,  # SamplesPerPixel
        284,  # PlanarConfiguration
        292,  # T4Options
        293,  # T6Options
        317,  # Predictor
        320,  # ColorMap
        322,  # TileWidth
        323,  # TileLength
        338,  # ExtraSamples
        339,  # SampleFormat
        347,  # JPEGTables
        529,  # YCbCrCoefficients
        530,  # YCbCrSubSampling
        531,  # YCbCrPositioning
        532,  # ReferenceBlackWhite
        50674,  # LercParameters
    }
)
# Tags that say where a band's strips or tiles are, besides the pixel tags.
_LAYOUT_TAGS: Final = frozenset({257, 273, 278, 279, 324, 325})  # length, strips, tiles
_TYPE_SIZES: Final = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_OLD_JPEG: Final = 6  # its strips point into one JPEG stream elsewhere in the file
# Decoded rows one strip or tile row may hold (4 bytes a pixel), or the page is decoded whole.
MAX_UNIT_BYTES: Final = 16 * 1024 * 1024
# The pixel tags' values, copied into every band and read again for each: a 16-bit colour map
# is 384 KB. A 6 MB one took 1.2 s and 258 MiB by bands (0.5 s, 130 MiB whole).
MAX_TAG_BYTES: Final = 512 * 1024
# Rows an uncompressed single strip is cut into: strips of about this many bytes (one a row,
# a thin 8 x 2,500,000 page was 2.5 million strips: 12 s and 170 MiB of offsets).
_RAW_STRIP_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class _Entry:
    kind: int
    count: int
    value: bytes  # as stored, in the file's byte order


@dataclass(frozen=True)
class TiffLayout:
    """The first page, as `bands` splits it."""

    data: bytes
    bo: str  # '<' or '>'
    entries: dict[int, _Entry]  # the pixel tags (_PIXEL_TAGS)
    width: int
    height: int
    unit: int  # rows a strip or tile row holds (a raw single strip: its cut's)
    tiled: bool
    offsets: tuple[int, ...]  # per strip or tile; for a raw single strip, per cut
    counts: tuple[int, ...]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def across(self) -> int:
        """Strips or tiles in one unit of rows."""
        if not self.tiled:
            return 1
        return -(-self.width // _uint(self.entries[322], self.bo))


def _uint(entry: _Entry, bo: str, index: int = 0) -> int:
    fmt = {1: "B", 3: "H", 4: "I"}.get(entry.kind)
    if fmt is None or index >= entry.count:
        raise ValueError("not an unsigned integer field")
    return int(struct.unpack_from(bo + fmt, entry.value, index * struct.calcsize(fmt))[0])


def _uints(entry: _Entry, bo: str) -> tuple[int, ...]:
    fmt = {3: "H", 4: "I"}.get(entry.kind)
    if fmt is None:
        raise ValueError("not an offset field")
    return struct.unpack(f"{bo}{entry.count}{fmt}", entry.value)


def _read_ifd(data: bytes) -> tuple[str, dict[int, _Entry]] | None:
    """The first page's fields of a classic TIFF (None for BigTIFF or a broken header)."""
    bo = {b"II": "<", b"MM": ">"}.get(data[:2])
    if bo is None or len(data) < 8 or struct.unpack_from(bo + "H", data, 2)[0] != 42:
        return None
    (offset,) = struct.unpack_from(bo + "I", data, 4)
    if not 8 <= offset <= len(data) - 2:
        return None
    (n,) = struct.unpack_from(bo + "H", data, offset)
    if offset + 2 + 12 * n > len(data):
        return None
    fields: dict[int, _Entry] = {}
    for i in range(n):
        at = offset + 2 + 12 * i
        tag, kind, count = struct.unpack_from(bo + "HHI", data, at)
        size = _TYPE_SIZES.get(kind, 0) * count
        if size == 0 or tag in fields:
            return None  # an unknown type or a repeated tag: Pillow's own reading applies
        if tag not in _PIXEL_TAGS and tag not in _LAYOUT_TAGS:
            continue  # not copied (300 tags on the same 4 MB were 1.2 GB)
        if size <= 4:
            value = data[at + 8 : at + 8 + size]
        else:
            (where,) = struct.unpack_from(bo + "I", data, at + 8)
            if where + size > len(data):
                return None
            value = data[where : where + size]
        fields[tag] = _Entry(kind, count, value)
    return bo, fields


def layout_for_bands(
    data: bytes, img: Image.Image, factor: int, *, cropped: bool = False
) -> TiffLayout | None:
    """The layout `bands` decodes this opened (not loaded) TIFF from, reduced by `factor`,
    or None when it is decoded whole (small, or not splittable: see the module's text). As
    for PNG, one not reduced goes by bands only when they are converted or cropped."""
    if img.format != "TIFF" or factor < 1:
        return None
    if factor == 1 and img.mode in ("L", "RGB") and not cropped:
        return None
    if img.width * img.height * 4 <= MIN_BYTES:
        return None
    try:
        layout = _layout(data)
    except (ValueError, struct.error, KeyError):
        return None
    if layout is None or layout.width * layout.height * 4 <= MIN_BYTES:
        return None
    if sorted(img.size) != sorted(layout.size):  # not the page Pillow opened
        return None
    return layout if _same_decoding(layout, img) else None


def _layout(data: bytes) -> TiffLayout | None:
    read = _read_ifd(data)
    if read is None:
        return None
    bo, fields = read
    width, height = _uint(fields[256], bo), _uint(fields[257], bo)
    compression = _uint(fields[259], bo) if 259 in fields else 1
    samples = _uint(fields[277], bo) if 277 in fields else 1
    planar = _uint(fields[284], bo) if 284 in fields else 1
    if compression == _OLD_JPEG or (planar != 1 and samples > 1) or width * height == 0:
        return None
    entries = {tag: entry for tag, entry in fields.items() if tag in _PIXEL_TAGS}
    if sum(len(entry.value) for entry in entries.values()) > MAX_TAG_BYTES:
        return None
    tiled = 322 in fields or 323 in fields
    if tiled:
        unit = _uint(fields[323], bo)
        offsets, counts = _uints(fields[324], bo), _uints(fields[325], bo)
        needed = -(-width // _uint(fields[322], bo)) * -(-height // unit)
    else:
        unit = min(_uint(fields[278], bo), height) if 278 in fields else height
        offsets, counts = _uints(fields[273], bo), _uints(fields[279], bo)
        needed = -(-height // unit)
    if unit < 1 or len(offsets) != needed or len(counts) != needed:
        return None
    if not tiled and needed == 1 and compression == 1 and unit > 1:
        row = counts[0] // height  # an uncompressed single strip: cut into strips of rows
        if row * height != counts[0]:
            return None
        unit = max(1, min(height, _RAW_STRIP_BYTES // max(1, row)))
        offsets = tuple(range(offsets[0], offsets[0] + counts[0], row * unit))
        counts = tuple(min(row * unit, offsets[0] + counts[0] - o) for o in offsets)
    span = _uint(fields[322], bo) * -(-width // _uint(fields[322], bo)) if tiled else width
    if unit * span * 4 > MAX_UNIT_BYTES:
        return None
    if any(o + c > len(data) for o, c in zip(offsets, counts, strict=True)):
        return None  # data missing: the whole decode says what (Pillow's error)
    if sum(counts) > len(data):  # strips that overlap: each band would copy them again
        return None  # (3,000 strips on one 1 MB: 2.6 s and 499 MiB by bands, 17 MiB whole)
    return TiffLayout(data, bo, entries, width, height, unit, tiled, offsets, counts)


def _same_decoding(layout: TiffLayout, img: Image.Image) -> bool:
    """Whether Pillow opens a band in the page's mode, codec and raw mode."""
    rows = min(layout.unit, layout.height)
    with Image.open(io.BytesIO(_band_tiff(layout, 0, rows)), formats=["TIFF"]) as band:
        if band.mode != img.mode or band.size != (layout.width, rows):
            return False
        return _codec(band) is not None and _codec(band) == _codec(img)


def _codec(img: Image.Image) -> tuple[str, object] | None:
    """The decoder and raw mode of an opened image's first tile."""
    tiles = getattr(img, "tile", None)
    if not tiles or not isinstance(tiles[0].args, tuple) or not tiles[0].args:
        return None
    return tiles[0].codec_name, tiles[0].args[0]


def _band_tiff(layout: TiffLayout, first: int, rows: int) -> bytes:
    """A TIFF of `rows` rows from unit `first` on: the page's pixel tags, then their values
    too long for the entry, then the band's strips or tiles in the order they are listed."""
    bo, across = layout.bo, layout.across()
    units = -(-rows // layout.unit)
    picked = range(first * across, (first + units) * across)
    pieces = [layout.data[layout.offsets[i] : layout.offsets[i] + layout.counts[i]] for i in picked]
    n = len(pieces)
    fields = dict(layout.entries)
    fields[257] = _Entry(4, 1, struct.pack(bo + "I", rows))
    offset_tag, count_tag = (324, 325) if layout.tiled else (273, 279)
    if not layout.tiled:
        fields[278] = _Entry(4, 1, struct.pack(bo + "I", layout.unit))
    fields[count_tag] = _Entry(4, n, struct.pack(f"{bo}{n}I", *(len(p) for p in pieces)))
    fields[offset_tag] = _Entry(4, n, bytes(4 * n))  # its size now, its values below
    tags = sorted(fields)
    at = 8 + 2 + 12 * len(tags) + 4
    placed: dict[int, int] = {}
    for tag in tags:
        size = len(fields[tag].value)
        if size > 4:
            placed[tag] = at
            at += size + size % 2
    starts = itertools.accumulate((len(p) for p in pieces[:-1]), initial=at)
    fields[offset_tag] = _Entry(4, n, struct.pack(f"{bo}{n}I", *starts))
    ifd, extra = [struct.pack(bo + "H", len(tags))], []
    for tag in tags:
        entry = fields[tag]
        if tag in placed:
            where = struct.pack(bo + "I", placed[tag])
            extra.append(entry.value + b"\x00" * (len(entry.value) % 2))
        else:
            where = entry.value.ljust(4, b"\x00")
        ifd.append(struct.pack(bo + "HHI", tag, entry.kind, entry.count) + where)
    ifd.append(bytes(4))  # no next page
    head = (b"II*\x00" if bo == "<" else b"MM\x00*") + struct.pack(bo + "I", 8)
    return b"".join([head, *ifd, *extra, *pieces])


def _decode(layout: TiffLayout, first: int, rows: int) -> Image.Image:
    with Image.open(io.BytesIO(_band_tiff(layout, first, rows)), formats=["TIFF"]) as band:
        band.load()
        return band.copy()


def bands(layout: TiffLayout, rows: int) -> Iterator[tuple[int, Image.Image]]:
    """(top, band) pairs covering the page (`layout_for_bands`), `rows` rows each (the last
    may have fewer), in the page's mode. Strips or tiles are decoded in groups of about
    `rows` rows; a group's rows past a band wait for the next."""
    per = max(1, rows // layout.unit)
    pending: list[Image.Image] = []
    held, top = 0, 0
    for first in range(0, -(-layout.height // layout.unit), per):
        n = min(per * layout.unit, layout.height - first * layout.unit)
        pending.append(_decode(layout, first, n))
        held += n
        last = first * layout.unit + n >= layout.height
        while held >= rows or (held and last):
            take = min(rows, held)
            band, pending = _take(pending, take)
            yield top, band
            top, held = top + take, held - take


def _take(pending: list[Image.Image], rows: int) -> tuple[Image.Image, list[Image.Image]]:
    """The first `rows` rows of the decoded groups, and what is left of them."""
    first = pending[0]
    w = first.width
    if first.height >= rows:
        band = first if first.height == rows else first.crop((0, 0, w, rows))
        rest = [first.crop((0, rows, w, first.height))] if first.height > rows else []
        return band, rest + pending[1:]
    out = Image.new(first.mode, (w, rows))
    if first.mode == "P":
        out.putpalette(first.getpalette() or [])
    out.info = dict(first.info)
    y, left = 0, []
    for part in pending:
        need = rows - y
        if need <= 0:
            left.append(part)
        elif part.height <= need:
            out.paste(part, (0, y))
            y += part.height
        else:
            out.paste(part.crop((0, 0, w, need)), (0, y))
            left.append(part.crop((0, need, w, part.height)))
            y = rows
    return out, left


def gray_peak(layout: TiffLayout, rows: int) -> float:
    """A 16/32-bit or float gray page's largest value (its scale onto 8 bits), from a pass of
    its own (as the whole decode's extrema are)."""
    return max(float(np.asarray(band).max()) for _, band in bands(layout, rows))
