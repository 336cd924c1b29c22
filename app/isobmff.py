"""Reading ISO base media file format boxes (ISO/IEC 14496-12) and HEIF items (ISO/IEC 23008-12)
from an upload's bytes, before any decoder sees them: the structure AVIF (app/avif_frames.py)
and HEIC (app/heif_items.py) share. Every count is capped and every offset checked; anything
that does not add up raises Unreadable, and the caller refuses the file (fail closed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

_BOX_CAP: Final = 4096  # boxes looked at; real files have fewer than 50
_ITEM_CAP: Final = 4096  # items in iinf/iloc; a grid has at most 256 x 256 tiles + alpha
_EXTENT_CAP: Final = 4096  # extents in all of iloc (round 34: 4096 x 65,535 made 2 GB)
_FIELD_SIZES: Final = (0, 4, 8)  # iloc's offset, length, base offset and index sizes
# meta's children that a file holds once (ISO/IEC 14496-12 8.11): two of one are refused
_ONCE: Final = frozenset({b"hdlr", b"pitm", b"iloc", b"iinf", b"iref", b"iprp", b"idat"})


class Unreadable(ValueError):
    """The boxes or the AV1 data say nothing trustworthy about the frame sizes."""


def boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    pos, seen = start, 0
    while pos + 8 <= end:
        seen += 1
        if seen > _BOX_CAP:
            raise Unreadable("too many boxes")
        size, kind, body = (
            int.from_bytes(data[pos : pos + 4], "big"),
            data[pos + 4 : pos + 8],
            pos + 8,
        )
        if size == 1 and pos + 16 <= end:
            size, body = int.from_bytes(data[pos + 8 : pos + 16], "big"), pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos or pos + size > end:
            raise Unreadable("a box is larger than what holds it")
        yield kind, body, pos + size
        pos += size


def uint(data: bytes, pos: int, n: int) -> tuple[int, int]:
    if pos + n > len(data):
        raise Unreadable("a box ends early")
    return int.from_bytes(data[pos : pos + n], "big"), pos + n


def locations(data: bytes, body: int, idat: int) -> dict[int, list[tuple[int, int]]]:
    """iloc: item id -> its extents (absolute offset, length; 0 = to the end of the file)."""
    version = data[body]
    sizes, pos = uint(data, body + 4, 2)
    offset_size, length_size = sizes >> 12, (sizes >> 8) & 15
    base_size, index_size = (sizes >> 4) & 15, (sizes & 15 if version in (1, 2) else 0)
    if {offset_size, length_size, base_size, index_size} - set(_FIELD_SIZES):
        raise Unreadable("item location fields of a size other than 0, 4 or 8 bytes")
    count, pos = uint(data, pos, 2 if version < 2 else 4)
    if count > _ITEM_CAP:
        raise Unreadable("too many items")
    total = 0
    out: dict[int, list[tuple[int, int]]] = {}
    for _ in range(count):
        item, pos = uint(data, pos, 2 if version < 2 else 4)
        method = 0
        if version in (1, 2):
            method, pos = uint(data, pos, 2)
            method &= 15
        _, pos = uint(data, pos, 2)  # data_reference_index
        base, pos = uint(data, pos, base_size)
        extents, pos = uint(data, pos, 2)
        total += extents
        if total > _EXTENT_CAP:
            raise Unreadable("too many item extents")
        spans = []
        for _ in range(extents):
            _, pos = uint(data, pos, index_size)
            offset, pos = uint(data, pos, offset_size)
            length, pos = uint(data, pos, length_size)
            if method == 1 and idat < 0:
                raise Unreadable("item data in an idat box that is missing")
            if method > 1:
                raise Unreadable("item data made of other items")
            spans.append((base + offset + (idat if method == 1 else 0), length))
        if item in out:
            raise Unreadable("an item is located twice")
        out[item] = spans
    return out


def item_data(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """An item's data, its extents joined (at most the file's size)."""
    parts = []
    for offset, length in spans:
        end = len(data) if length == 0 else offset + length
        if offset >= len(data) or end > len(data):
            raise Unreadable("an item's data lies outside the file")
        parts.append(data[offset:end])
    return b"".join(parts)


def item_types(data: bytes, body: int, end: int) -> dict[int, bytes]:
    """The iinf box's items: id -> item type (infe versions 2 and 3; older ones carry none)."""
    version = data[body]
    count, pos = uint(data, body + 4, 2 if version == 0 else 4)
    if count > _ITEM_CAP:
        raise Unreadable("too many items")
    found = {}
    for kind, start, _ in boxes(data, pos, end):
        if kind != b"infe" or data[start] not in (2, 3):
            continue
        width = 2 if data[start] == 2 else 4
        item, pos = uint(data, start + 4, width)
        if item in found:  # libheif reads the first, a dict the last: never both
            raise Unreadable("an item is listed twice")
        found[item] = data[pos + 2 : pos + 6]
    return found


def exif_blocks(data: bytes, children: dict[bytes, tuple[int, int]]) -> list[bytes]:
    """The EXIF data of every `Exif` item from its TIFF header on (an item starts with that
    header's offset after its first four bytes; readers also look for the header itself, so
    the first one found counts when the offset misleads)."""
    if b"iinf" not in children or b"iloc" not in children:
        return []
    located = located_items(data, children)
    blocks = []
    for item, kind in item_types(data, *children[b"iinf"]).items():
        if kind == b"Exif" and item in located:
            block = item_data(data, located[item])
            skip, _ = uint(block, 0, 4)
            found = [i for i in (block.find(b"II*\0", 4), block.find(b"MM\0*", 4)) if i >= 0]
            blocks.append(block[4 + skip :])
            blocks.extend(block[i:] for i in found[:1] if i != 4 + skip)
    return blocks


def meta_children(data: bytes) -> tuple[bool, dict[bytes, tuple[int, int]]]:
    """(whether a `moov` box makes it an image sequence, the top-level `meta` box's children:
    type -> (payload start, end); empty when there is no meta box)."""
    meta, sequence = None, False
    for kind, start, end in boxes(data, 0, len(data)):
        if kind == b"meta" and meta is None:
            meta = (start + 4, end)  # a full box: version and flags first
        sequence |= kind == b"moov"
    if meta is None:
        return sequence, {}
    children: dict[bytes, tuple[int, int]] = {}
    for kind, start, end in boxes(data, *meta):
        if kind in children and kind in _ONCE:  # which one a decoder reads is its own choice
            raise Unreadable(f"two '{kind.decode('latin-1')}' boxes")
        children[kind] = (start, end)
    return sequence, children


def properties(data: bytes, children: dict[bytes, tuple[int, int]]) -> list[tuple[bytes, int, int]]:
    """The item properties in iprp/ipco: (type, payload start, end), in order."""
    out: list[tuple[bytes, int, int]] = []
    containers = 0
    for kind, start, end in boxes(data, *children.get(b"iprp", (0, 0))):
        if kind == b"ipco":
            containers += 1
            if containers > 1:
                raise Unreadable("two 'ipco' boxes")
            out.extend(boxes(data, start, end))
    return out


def declared_sizes(data: bytes, props: list[tuple[bytes, int, int]]) -> list[tuple[int, int]]:
    """The sizes the `ispe` properties declare (width, height)."""
    return [
        (uint(data, at + 4, 4)[0], uint(data, at + 8, 4)[0])
        for prop, at, stop in props
        if prop == b"ispe" and stop - at >= 12  # version and flags, width, height
    ]


def located_items(
    data: bytes, children: dict[bytes, tuple[int, int]]
) -> dict[int, list[tuple[int, int]]]:
    """iloc's extents of every item (Unreadable without iinf and iloc)."""
    if b"iinf" not in children or b"iloc" not in children:
        raise Unreadable("no item information or locations")
    idat = children[b"idat"][0] if b"idat" in children else -1
    return locations(data, children[b"iloc"][0], idat)


def _associations(data: bytes, start: int, end: int) -> dict[int, list[int]]:
    """ipma: item id -> the 0-based indexes of its properties in ipco."""
    version, flags = data[start], int.from_bytes(data[start + 1 : start + 4], "big")
    count, pos = uint(data, start + 4, 4)
    if count > 4096:
        raise Unreadable("too many property associations")
    out: dict[int, list[int]] = {}
    for _ in range(count):
        item, pos = uint(data, pos, 2 if version < 1 else 4)
        n, pos = uint(data, pos, 1)
        indexes = []
        for _ in range(n):
            value, pos = uint(data, pos, 2 if flags & 1 else 1)
            index = value & (0x7FFF if flags & 1 else 0x7F)
            if index:
                indexes.append(index - 1)
        out.setdefault(item, []).extend(indexes)
    if pos > end:
        raise Unreadable("the property associations run past their box")
    return out


def property_links(data: bytes, children: dict[bytes, tuple[int, int]]) -> dict[int, list[int]]:
    """Every `ipma` box's associations: item id -> the 0-based indexes of its properties."""
    links: dict[int, list[int]] = {}
    for kind, start, end in boxes(data, *children.get(b"iprp", (0, 0))):
        if kind == b"ipma":
            for item, indexes in _associations(data, start, end).items():
                links.setdefault(item, []).extend(indexes)
    return links


def primary_item(data: bytes, children: dict[bytes, tuple[int, int]]) -> int:
    """The `pitm` box's item id (Unreadable without one)."""
    if b"pitm" not in children:
        raise Unreadable("no primary item")
    start = children[b"pitm"][0]
    return uint(data, start + 4, 2 if data[start] == 0 else 4)[0]


class BitReader:
    """A bit string read most significant bit first: AV1's headers, HEVC's parameter sets."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise Unreadable(f"the {self.what} ends early")
            value = value << 1 | (self.data[byte] >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value

    def exp_golomb(self) -> int:
        """An Exp-Golomb code (HEVC's ue(v), H.265 9.2; AV1's uvlc(), 4.10.3)."""
        zeros = 0
        while not self.read(1):
            zeros += 1
            if zeros >= 32:
                raise Unreadable("a variable-length code is too long")
        return (1 << zeros) - 1 + self.read(zeros)
