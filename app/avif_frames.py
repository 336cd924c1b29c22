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

from dataclasses import dataclass
from typing import Final

from app.isobmff import (
    BitReader,
    Unreadable,
    declared_sizes,
    item_data,
    item_types,
    located_items,
    meta_children,
    properties,
    uint,
)

__all__ = ["Frames", "Unreadable", "av1_frames", "sequence_frame_size", "sequence_headers"]

_OBU_CAP: Final = 4096  # OBUs in one item: a temporal unit has a few (one per tile group)
_SEQUENCE_HEADER: Final = 1  # obu_type


@dataclass(frozen=True)
class Frames:
    sequence: bool  # a `moov` box: an image sequence, whose frames are in a track
    coded: tuple[tuple[int, int], ...]  # the largest frame of each AV1 image item
    declared: tuple[tuple[int, int], ...]  # the sizes its `ispe` properties declare
    plane_bytes: float = 0.0  # the decoded planes of every item together, at their largest


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte, pos = uint(data, pos, 1)
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
        header, pos = uint(obus, pos, 1)
        kind, extension, has_size = (header >> 3) & 15, header >> 2 & 1, header >> 1 & 1
        pos += extension
        size, pos = _leb128(obus, pos) if has_size else (len(obus) - pos, pos)
        if kind == _SEQUENCE_HEADER:
            found.append(_sequence_header(BitReader(obus[pos : pos + size], "sequence header")))
        pos += size
    if not found:
        raise Unreadable("no sequence header")
    return found


def _sequence_header(bits: BitReader) -> SequenceHeader:
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
                bits.exp_golomb()
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


def _plane_bytes(bits: BitReader, profile: int, reduced: int) -> float:
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
    sequence, children = meta_children(data)
    if not children:
        return Frames(sequence, (), ())
    declared = declared_sizes(data, properties(data, children))
    located = located_items(data, children)
    types = item_types(data, *children[b"iinf"])
    sizes, planes = [], 0.0
    for item in sorted(i for i, kind in types.items() if kind == b"av01"):
        if item not in located:
            raise Unreadable("an AV1 item has no location")
        headers = sequence_headers(item_data(data, located[item]))
        largest = max(headers, key=lambda s: s.width * s.height)
        sizes.append((largest.width, largest.height))
        planes += max(s.bytes for s in headers)
    return Frames(sequence, tuple(sizes), tuple(declared), planes)
