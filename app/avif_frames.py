"""The size of the AV1 frames an AVIF file holds, read from the AV1 data itself before libavif
decodes anything (round 34's attack).

The `ispe` property only declares a size: a 6 KB file whose frame is 16384x16384 and whose
ispe says 1000x1000 was decoded whole by libavif (then scaled to the declared size), which
took a worker up by 500 MiB. So every AV1 image item's data is found through the `iloc` box,
and its sequence headers (AV1 5.5: every key frame sample carries one; a frame cannot exceed
its sequence header's maximum) give the largest frame that stream may hold. Image sequences (animated AVIF: a `moov` box, frames in
a track) are not read here and are refused by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

_BOX_CAP: Final = 4096  # boxes looked at; real files have fewer than 50
_ITEM_CAP: Final = 4096  # items in iinf/iloc; a grid has at most 256 x 256 tiles + alpha
_EXTENT_CAP: Final = 4096  # extents in all of iloc (round 34: 4096 x 65,535 made 2 GB)
_OBU_CAP: Final = 4096  # OBUs in one item: a temporal unit has a few (one per tile group)
_FIELD_SIZES: Final = (0, 4, 8)  # iloc's offset, length, base offset and index sizes
_SEQUENCE_HEADER: Final = 1  # obu_type


class Unreadable(ValueError):
    """The boxes or the AV1 data say nothing trustworthy about the frame sizes."""


@dataclass(frozen=True)
class Frames:
    sequence: bool  # a `moov` box: an image sequence, whose frames are in a track
    coded: tuple[tuple[int, int], ...]  # the largest frame of each AV1 image item
    declared: tuple[tuple[int, int], ...]  # the sizes its `ispe` properties declare
    plane_bytes: float = 0.0  # the decoded planes of every item together, at their largest


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
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


def _uint(data: bytes, pos: int, n: int) -> tuple[int, int]:
    if pos + n > len(data):
        raise Unreadable("a box ends early")
    return int.from_bytes(data[pos : pos + n], "big"), pos + n


def _av01_items(data: bytes, body: int, end: int) -> set[int]:
    """The ids of the iinf box's AV1 image items (infe version 2 or 3)."""
    version = data[body]
    _, pos = _uint(data, body + 4, 2 if version == 0 else 4)
    found = set()
    for kind, start, _ in _boxes(data, pos, end):
        if kind != b"infe" or data[start] not in (2, 3):
            continue
        width = 2 if data[start] == 2 else 4
        item, pos = _uint(data, start + 4, width)
        if data[pos + 2 : pos + 6] == b"av01":
            found.add(item)
    return found


def _locations(data: bytes, body: int, idat: int) -> dict[int, list[tuple[int, int]]]:
    """iloc: item id -> its extents (absolute offset, length; 0 = to the end of the file)."""
    version = data[body]
    sizes, pos = _uint(data, body + 4, 2)
    offset_size, length_size = sizes >> 12, (sizes >> 8) & 15
    base_size, index_size = (sizes >> 4) & 15, (sizes & 15 if version in (1, 2) else 0)
    if {offset_size, length_size, base_size, index_size} - set(_FIELD_SIZES):
        raise Unreadable("item location fields of a size other than 0, 4 or 8 bytes")
    count, pos = _uint(data, pos, 2 if version < 2 else 4)
    if count > _ITEM_CAP:
        raise Unreadable("too many items")
    total = 0
    out: dict[int, list[tuple[int, int]]] = {}
    for _ in range(count):
        item, pos = _uint(data, pos, 2 if version < 2 else 4)
        method = 0
        if version in (1, 2):
            method, pos = _uint(data, pos, 2)
            method &= 15
        _, pos = _uint(data, pos, 2)  # data_reference_index
        base, pos = _uint(data, pos, base_size)
        extents, pos = _uint(data, pos, 2)
        total += extents
        if total > _EXTENT_CAP:
            raise Unreadable("too many item extents")
        spans = []
        for _ in range(extents):
            _, pos = _uint(data, pos, index_size)
            offset, pos = _uint(data, pos, offset_size)
            length, pos = _uint(data, pos, length_size)
            if method == 1 and idat < 0:
                raise Unreadable("item data in an idat box that is missing")
            if method > 1:
                raise Unreadable("item data made of other items")
            spans.append((base + offset + (idat if method == 1 else 0), length))
        out[item] = spans
    return out


def _item_data(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """An item's data, its extents joined (at most the file's size)."""
    parts = []
    for offset, length in spans:
        end = len(data) if length == 0 else offset + length
        if offset >= len(data) or end > len(data):
            raise Unreadable("an item's data lies outside the file")
        parts.append(data[offset:end])
    return b"".join(parts)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise Unreadable("the sequence header ends early")
            value = value << 1 | (self.data[byte] >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value

    def uvlc(self) -> None:
        zeros = 0
        while not self.read(1):
            zeros += 1
            if zeros >= 32:
                raise Unreadable("a variable-length code is too long")
        self.read(zeros)


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte, pos = _uint(data, pos, 1)
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise Unreadable("an OBU size is too long")


@dataclass(frozen=True)
class SequenceHeader:
    width: int  # the largest frame the sequence may code
    height: int
    plane_bytes: float  # bytes a pixel of its decoded planes (6 when the colour config is unread)

    @property
    def bytes(self) -> float:
        return self.width * self.height * self.plane_bytes


def sequence_frame_size(obus: bytes) -> tuple[int, int]:
    """The largest (max_frame_width, max_frame_height) of every sequence header among the
    OBUs (AV1 spec 5.3 OBU header, 5.5 sequence header, read up to those fields): every OBU
    is walked, since a second sequence header starts a new sequence that the decoder follows
    (round 34: a 640x480 one, then a 16384x16384 one and its frame, was decoded whole)."""
    largest = max(sequence_headers(obus), key=lambda s: s.width * s.height)
    return largest.width, largest.height


def sequence_headers(obus: bytes) -> list[SequenceHeader]:
    """Every sequence header among the OBUs of an item (see sequence_frame_size)."""
    pos, found, seen = 0, [], 0
    while pos < len(obus):
        seen += 1
        if seen > _OBU_CAP:
            raise Unreadable("too many OBUs in one image")
        header, pos = _uint(obus, pos, 1)
        kind, extension, has_size = (header >> 3) & 15, header >> 2 & 1, header >> 1 & 1
        pos += extension
        size, pos = _leb128(obus, pos) if has_size else (len(obus) - pos, pos)
        if kind == _SEQUENCE_HEADER:
            found.append(_sequence_header(_Bits(obus[pos : pos + size])))
        pos += size
    if not found:
        raise Unreadable("no sequence header")
    return found


def _sequence_header(bits: _Bits) -> SequenceHeader:
    profile = bits.read(3)  # seq_profile
    bits.read(1)  # still_picture
    reduced = bits.read(1)  # reduced_still_picture_header
    if reduced:
        bits.read(5)  # seq_level_idx[0]
    else:
        decoder_model, buffer_delay_bits = False, 0
        if bits.read(1):  # timing_info_present_flag
            bits.read(32)
            bits.read(32)
            if bits.read(1):  # equal_picture_interval
                bits.uvlc()
            decoder_model = bool(bits.read(1))
            if decoder_model:
                buffer_delay_bits = bits.read(5) + 1
                bits.read(32)
                bits.read(10)  # buffer_removal_time_length_minus_1, frame_presentation_...
        initial_display_delay = bits.read(1)
        for _ in range(bits.read(5) + 1):  # operating points
            bits.read(12)  # operating_point_idc
            if bits.read(5) > 7:  # seq_level_idx
                bits.read(1)  # seq_tier
            if decoder_model and bits.read(1):  # decoder_model_present_for_this_op
                bits.read(2 * buffer_delay_bits + 1)
            if initial_display_delay and bits.read(1):
                bits.read(4)
    width_bits, height_bits = bits.read(4) + 1, bits.read(4) + 1
    width, height = bits.read(width_bits) + 1, bits.read(height_bits) + 1
    try:
        plane_bytes = _plane_bytes(bits, profile, reduced)
    except Unreadable:  # the sizes were read; assume the costliest planes
        plane_bytes = 6.0
    return SequenceHeader(width, height, plane_bytes)


def _plane_bytes(bits: _Bits, profile: int, reduced: int) -> float:
    """Bytes a pixel of the decoded planes, from the rest of the sequence header up to its
    colour config (AV1 5.5.1, 5.5.2): 1 a sample up to 8 bits, 2 above; chroma planes at
    4:2:0 a quarter each, 4:2:2 a half, 4:4:4 whole, none for monochrome."""
    if not reduced and bits.read(1):  # frame_id_numbers_present_flag
        bits.read(7)  # delta_frame_id_length_minus_2, additional_frame_id_length_minus_1
    bits.read(3)  # use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if not reduced:
        bits.read(4)  # interintra and masked compound, warped motion, dual filter
        order_hint = bits.read(1)  # enable_order_hint
        if order_hint:
            bits.read(2)  # enable_jnt_comp, enable_ref_frame_mvs
        # seq_choose_screen_content_tools, or forced on; then seq_choose_integer_mv, or not
        if (bits.read(1) or bits.read(1)) and not bits.read(1):
            bits.read(1)  # seq_force_integer_mv
        if order_hint:
            bits.read(3)  # order_hint_bits_minus_1
    bits.read(3)  # enable_superres, enable_cdef, enable_restoration
    high = bits.read(1)  # color_config: high_bitdepth
    depth = (12 if bits.read(1) else 10) if profile == 2 and high else (10 if high else 8)
    mono = 0 if profile == 1 else bits.read(1)
    sample = 2 if depth > 8 else 1
    if mono:
        return float(sample)
    primaries = transfer = matrix = 2  # unspecified
    if bits.read(1):  # color_description_present_flag
        primaries, transfer, matrix = bits.read(8), bits.read(8), bits.read(8)
    if (primaries, transfer, matrix) == (1, 13, 0):  # sRGB with identity matrix: 4:4:4
        chroma = 1.0
    elif profile == 0:
        chroma = 0.25
    elif profile == 1:
        chroma = 1.0
    else:
        bits.read(1)  # color_range
        x = bits.read(1) if depth == 12 else 1
        y = bits.read(1) if depth == 12 and x else 0
        chroma = 1.0 / ((1 + x) * (1 + y))
    return sample * (1 + 2 * chroma)


def av1_frames(data: bytes) -> Frames:
    """The frame sizes of every AV1 image item of an AVIF file (Unreadable when an item's
    data or its sequence header cannot be found)."""
    meta, sequence = None, False
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind == b"meta" and meta is None:
            meta = (start + 4, end)  # a full box: version and flags first
        sequence |= kind == b"moov"
    if meta is None:
        return Frames(sequence, (), ())
    children = {kind: (start, end) for kind, start, end in _boxes(data, *meta)}
    declared = []
    for kind, start, end in _boxes(data, *children.get(b"iprp", (0, 0))):
        for prop, at, stop in _boxes(data, start, end) if kind == b"ipco" else ():
            if prop == b"ispe" and stop - at >= 12:  # version and flags, width, height
                declared.append((_uint(data, at + 4, 4)[0], _uint(data, at + 8, 4)[0]))
    if b"iinf" not in children or b"iloc" not in children:
        raise Unreadable("no item information or locations")
    items = _av01_items(data, *children[b"iinf"])
    idat = children[b"idat"][0] if b"idat" in children else -1
    located = _locations(data, children[b"iloc"][0], idat)
    sizes, planes = [], 0.0
    for item in sorted(items):
        if item not in located:
            raise Unreadable("an AV1 item has no location")
        headers = sequence_headers(_item_data(data, located[item]))
        largest = max(headers, key=lambda s: s.width * s.height)
        sizes.append((largest.width, largest.height))
        planes += max(s.bytes for s in headers)
    return Frames(sequence, tuple(sizes), tuple(declared), planes)
