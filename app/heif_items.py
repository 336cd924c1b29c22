"""What a HEIC/HEIF file's images would cost to decode, read from its boxes before libheif
parses anything (the reasoning of app/avif_frames.py, for HEVC).

An `ispe` property only declares a size; the HEVC decoder allocates what the item's sequence
parameter set (SPS, in its `hvcC` property) codes. A grid or overlay is pasted onto a canvas
of the size its item data declares. So this reads every SPS (its picture size, chroma format
and bit depth: ITU-T H.265 7.3.2.2), every grid and overlay canvas, and which property belongs
to which item (`ipma`). Image items of a kind libheif would decode with a codec not checked
here (uncompressed `unci` with its own compression, AV1, JPEG, VVC ...) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from app.isobmff import (
    BitReader,
    Unreadable,
    boxes,
    declared_sizes,
    item_data,
    item_types,
    located_items,
    meta_children,
    primary_item,
    properties,
    property_links,
    uint,
)

HEVC: Final = b"hvc1"
DERIVED: Final = frozenset({b"grid", b"iovl", b"iden"})  # made of other items, no codec
METADATA: Final = frozenset({b"Exif", b"mime", b"uri ", b"tmap"})  # tmap: a gain map's recipe
_SPS: Final = 33  # nal_unit_type of a sequence parameter set
_NAL_CAP: Final = 64  # NAL units in one hvcC; real files carry one VPS, SPS and PPS
_DEPTH_CAP: Final = 16  # derived images made of derived images; real files nest one deep


@dataclass
class HeifItems:
    sequence: bool  # a `moov` box: an image sequence, whose frames are in a track
    primary: bytes = b""  # the primary item's type
    coded: list[tuple[int, int]] = field(default_factory=list)  # each HEVC item's picture
    declared: list[tuple[int, int]] = field(default_factory=list)  # `ispe` sizes
    canvases: list[tuple[int, int]] = field(default_factory=list)  # grid and overlay outputs
    plane_bytes: float = 0.0  # the largest HEVC item's decoded planes
    plane_pixel: float = 0.0  # the most bytes a pixel of any HEVC item's planes
    full_chroma: bool = False  # some HEVC item is 4:4:4 (libheif turns it to RGB via a copy)
    overlay_pixels: int = 0  # `iovl` canvases: composed in RGB, beside the layers
    other_codecs: set[bytes] = field(default_factory=set)  # image items not decoded by HEVC
    # Coded pixels decoding the primary picture decodes: every coded picture it is derived
    # from, as often as it is used (an `iden` or a grid tile may name a coded picture another
    # already names), and every auxiliary image (alpha, depth) of any of them, counted the
    # same way. Canvases are not counted: each is under the limit by itself.
    decoded: int = 0


def _rbsp(nal: bytes) -> bytes:
    """The NAL unit's payload without its 2-byte header and emulation-prevention bytes."""
    return nal[2:].replace(b"\x00\x00\x03", b"\x00\x00")


def sps_size(nal: bytes) -> tuple[int, int, float, bool]:
    """(width, height, bytes a pixel of the decoded planes, whether chroma is full size: 4:4:4)
    coded by an SPS NAL unit."""
    bits = BitReader(_rbsp(nal), "sequence parameter set")
    bits.read(4)  # sps_video_parameter_set_id
    sub_layers = bits.read(3)  # sps_max_sub_layers_minus1
    bits.read(1)  # sps_temporal_id_nesting_flag
    bits.read(96)  # profile_tier_level: general profile (88 bits) and level (8)
    present = [(bits.read(1), bits.read(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.read(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile, level in present:
        bits.read(88 * profile + 8 * level)
    bits.exp_golomb()  # sps_seq_parameter_set_id
    chroma = bits.exp_golomb()
    if chroma > 3:
        raise Unreadable("a chroma format that does not exist")
    if chroma == 3:
        bits.read(1)  # separate_colour_plane_flag
    width, height = bits.exp_golomb(), bits.exp_golomb()
    if bits.read(1):  # conformance_window_flag
        for _ in range(4):
            bits.exp_golomb()
    depth = 8 + max(
        bits.exp_golomb(), bits.exp_golomb()
    )  # bit_depth_luma_minus8, bit_depth_chroma_minus8
    sample = 1 if depth <= 8 else 2
    return width, height, sample * (1 + 2 * (0.0, 0.25, 0.5, 1.0)[chroma]), chroma == 3


def hvcc_sizes(data: bytes, start: int, end: int) -> list[tuple[int, int, float, bool]]:
    """Every SPS in an hvcC property (ISO/IEC 14496-15 8.3.3.1), read by sps_size."""
    count, pos = uint(data, start + 22, 1)  # numOfArrays, after the fixed 22 bytes
    found, seen = [], 0
    for _ in range(count):
        kind, pos = uint(data, pos, 1)
        nalus, pos = uint(data, pos, 2)
        for _ in range(nalus):
            seen += 1
            if seen > _NAL_CAP:
                raise Unreadable("too many parameter sets")
            length, pos = uint(data, pos, 2)
            if pos + length > end:
                raise Unreadable("a parameter set runs past its box")
            if kind & 0x3F == _SPS:
                found.append(sps_size(data[pos : pos + length]))
            pos += length
    return found


def _canvas(kind: bytes, body: bytes) -> tuple[int, int]:
    """The output size a grid (rows, columns first) or an overlay (a fill colour first)
    declares in its item data (ISO/IEC 23008-12 6.6.2.3.2, 6.6.2.4.2)."""
    if len(body) < 2:
        raise Unreadable("a derived image's data is missing")
    wide = body[1] & 1
    at = 4 if kind == b"grid" else 10
    width, pos = uint(body, at, 4 if wide else 2)
    height, _ = uint(body, pos, 4 if wide else 2)
    return width, height


def _derivations(data: bytes, children: dict[bytes, tuple[int, int]]) -> dict[int, list[int]]:
    """Item -> the items decoding it decodes, in order: iref's `dimg` references (a derived
    image's tiles or layers) and, turned round, its `auxl` ones (an auxiliary image such as an
    alpha plane names the image it belongs to; libheif decodes an image's alpha with it, a
    grid tile's too: round 44, a 64x64 picture whose alpha was a grid of 100 copies of one
    13 MP picture took 10 s of CPU, uncounted)."""
    if b"iref" not in children:
        return {}
    start, end = children[b"iref"]
    wide = data[start] != 0  # version 1: 32-bit item ids
    out: dict[int, list[int]] = {}
    for kind, at, stop in boxes(data, start + 4, end):
        if kind not in (b"dimg", b"auxl"):
            continue
        item, pos = uint(data, at, 4 if wide else 2)
        count, pos = uint(data, pos, 2)
        if pos + count * (4 if wide else 2) > stop:
            raise Unreadable("a reference list runs past its box")
        for _ in range(count):
            target, pos = uint(data, pos, 4 if wide else 2)
            if kind == b"dimg":
                out.setdefault(item, []).append(target)
            else:
                out.setdefault(target, []).append(item)
    return out


def _decoded(
    item: int,
    pixels: dict[int, int],
    uses: dict[int, list[int]],
    done: dict[int, int],
    depth: int = 0,
) -> int:
    """Coded pixels decoded to make `item`: its own (a coded picture) and those of everything
    it is derived from or has as an auxiliary image, each as often as it is named. Memoised per item, so a wide or deep web
    of references costs its size to walk, not its size to decode; a cycle is damage."""
    if item in done:
        if done[item] < 0:
            raise Unreadable("a derived image is made of itself")
        return done[item]
    if depth > _DEPTH_CAP:
        raise Unreadable("derived images nested too deep")
    done[item] = -1
    parts = uses.get(item, [])
    total = pixels.get(item, 0) + sum(_decoded(i, pixels, uses, done, depth + 1) for i in parts)
    done[item] = total
    return total


def heif_items(data: bytes) -> HeifItems:
    """What the file's images would cost to decode (Unreadable when it cannot be told)."""
    sequence, children = meta_children(data)
    found = HeifItems(sequence)
    if not children:
        if sequence:
            return found
        raise Unreadable("no meta box, so no image items")
    props = properties(data, children)
    found.declared = declared_sizes(data, props)
    types = item_types(data, *children[b"iinf"]) if b"iinf" in children else {}
    located = located_items(data, children)
    primary = primary_item(data, children)
    if primary not in types:
        raise Unreadable("the primary item is not among the items")
    found.primary = types[primary]
    links = property_links(data, children)
    pixels: dict[int, int] = {}
    for item, kind in sorted(types.items()):
        if kind in DERIVED - {b"iden"}:
            if item not in located:
                raise Unreadable("a derived image has no data")
            found.canvases.append(_canvas(kind, item_data(data, located[item])))
            if kind == b"iovl":
                found.overlay_pixels += found.canvases[-1][0] * found.canvases[-1][1]
        elif kind == HEVC:
            sizes = [
                size
                for index in links.get(item, [])
                if index < len(props) and props[index][0] == b"hvcC"
                for size in hvcc_sizes(data, props[index][1], props[index][2])
            ]
            if not sizes:
                raise Unreadable("an HEVC image has no sequence parameter set")
            largest = max(sizes, key=lambda s: s[0] * s[1] * s[2])
            found.coded.append((largest[0], largest[1]))
            pixels[item] = largest[0] * largest[1]
            found.plane_bytes = max(found.plane_bytes, largest[0] * largest[1] * largest[2])
            found.plane_pixel = max(found.plane_pixel, max(s[2] for s in sizes))
            found.full_chroma |= any(s[3] for s in sizes)
        elif kind not in DERIVED and kind not in METADATA:
            found.other_codecs.add(kind)
    found.decoded = _decoded(primary, pixels, _derivations(data, children), {})
    return found
