"""A colour profile's structure, read before littlecms builds a transform from it.

Building a transform evaluates the profile's pipeline at every point of a sampling grid (some
36,000 points for 8-bit RGB), inside littlecms, where no time budget can stop it. A pipeline's
cost is bounded by its structure, not by its size: an 844-byte PNG carried a 320 KB v4 profile
whose float tag (`D2B0`, a `mpet` chain) listed 40,000 stages, all pointing at one 60-byte
matrix, and took 40 s of CPU (round 43); a segmented curve may list 65,535 segments, each
looked at for every sample. So a profile is applied only when every pipeline it holds has at
most MAX_STAGES stages, curves of at most MAX_SEGMENTS segments and at most MAX_CHANNELS
channels at each step (a CLUT's interpolation grows as 2 to the power of its inputs); real
display, camera and print profiles have 3-5 stages of 3 or 4 channels and 1-3 segments per
curve. Any other is ignored like a damaged one: the picture is read as sRGB.
"""

from __future__ import annotations

import struct
from typing import Final

MAX_STAGES: Final = 16
MAX_SEGMENTS: Final = 64
MAX_CHANNELS: Final = 4
# littlecms reads at most 100 tags (MAX_TABLE_TAG); a longer table is refused by it anyway.
_MAX_TAGS: Final = 100
# Tag types holding a pipeline: lut8, lut16, lutAtoB, lutBtoA (channel counts as two bytes)
_LUT_TYPES: Final = frozenset({b"mft1", b"mft2", b"mAB ", b"mBA "})


def too_complex(icc: bytes) -> str | None:
    """Why the profile `icc` is not applied (its structure is beyond the bounds above), or
    None. A structure that cannot be read is left to littlecms, which refuses it."""
    try:
        (count,) = struct.unpack_from(">I", icc, 128)
        for i in range(min(count, _MAX_TAGS)):
            sig, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
            why = _tag(icc[offset : offset + size])
            if why is not None:
                return f"its {sig.decode('latin-1').strip()!r} tag has {why}"
    except (struct.error, IndexError):
        return None
    return None


def _tag(data: bytes) -> str | None:
    kind = data[:4]
    if kind in _LUT_TYPES:
        return _channels(data[8], data[9])
    if kind == b"mpet":
        return _elements(data)
    return None


def _channels(inputs: int, outputs: int) -> str | None:
    if inputs > MAX_CHANNELS or outputs > MAX_CHANNELS:
        return f"a step of {inputs} inputs and {outputs} outputs (at most {MAX_CHANNELS})"
    return None


def _elements(data: bytes) -> str | None:
    """A multiProcessElements tag: its stage count, and each stage's channels and curves."""
    inputs, outputs, stages = struct.unpack_from(">HHI", data, 8)
    if stages > MAX_STAGES:
        return f"{stages:,} stages (at most {MAX_STAGES})"
    if (why := _channels(inputs, outputs)) is not None:
        return why
    for i in range(stages):
        offset, size = struct.unpack_from(">II", data, 16 + 8 * i)
        element = data[offset : offset + size]
        if len(element) < 12:
            continue  # littlecms refuses the tag
        e_in, e_out = struct.unpack_from(">HH", element, 8)
        if (why := _channels(e_in, e_out)) is not None:
            return why
        if element[:4] == b"cvst" and (why := _curve_set(element, e_in)) is not None:
            return why
    return None


def _curve_set(element: bytes, curves: int) -> str | None:
    for i in range(curves):
        offset, size = struct.unpack_from(">II", element, 12 + 8 * i)
        curve = element[offset : offset + size]
        if len(curve) >= 10 and curve[:4] == b"curf":
            (segments,) = struct.unpack_from(">H", curve, 8)
            if segments > MAX_SEGMENTS:
                return f"a curve of {segments:,} segments (at most {MAX_SEGMENTS})"
    return None
