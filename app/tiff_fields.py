"""TIFF header fields read straight from the bytes (no Pillow): an IFD entry's unsigned value,
the first page's sample format, for refusals that say what was sent, and what a field's values
cost once Pillow has turned them into Python objects."""

from __future__ import annotations

import struct
from typing import Final

_TIFF_SAMPLE_KINDS: Final = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}
# What Pillow decodes from TIFF, said once for every refusal of another sample format.
TIFF_SAMPLES_ACCEPTED: Final = (
    "1-, 2-, 4-, 8- and 16-bit unsigned integers, and 32-bit integers or 32-bit floats in "
    "one-channel images"
)


# TIFF field types an unsigned value may be stored as (libtiff reads each of these for a
# LONG field): BYTE, SHORT, LONG, SBYTE, SSHORT, SLONG, LONG8, SLONG8, IFD8.
_TIFF_INT_TYPES: Final = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q", 18: "Q"}


# Bytes of the Python objects Pillow makes for each value of a field it decodes, by field type
# (tracemalloc, Pillow 13, per value: SHORT 24, LONG 21, FLOAT 45, DOUBLE 49, RATIONAL 153,
# rounded up; the process's RSS grew by about 280 a RATIONAL, round 43). BYTE, ASCII and
# UNDEFINED values stay one bytes object.
_PY_VALUE_BYTES: Final = {
    **dict.fromkeys((3, 4, 6, 8, 9, 13, 16, 17, 18), 32),
    **dict.fromkeys((11, 12), 48),
    **dict.fromkeys((5, 10), 160),
}


def python_bytes(kind: int, count: int) -> int:
    """About how many bytes of Python objects a field of `count` values of type `kind` takes
    once decoded (0 for byte-like types, which stay bytes)."""
    return count * _PY_VALUE_BYTES.get(kind, 0)


def first_ifd(data: bytes) -> tuple[str, range]:
    """The byte order ("<" or ">") of TIFF bytes and the offsets of their first directory's
    entries that lie whole within them (none when the directory's offset is not in the data)."""
    bo = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return bo, range(0)
    (offset,) = struct.unpack_from(bo + "I", data, 4)
    if not 0 < offset <= len(data) - 2:
        return bo, range(0)
    (entries,) = struct.unpack_from(bo + "H", data, offset)
    count = max(0, min(entries, (len(data) - offset - 2) // 12))
    return bo, range(offset + 2, offset + 2 + 12 * count, 12)


def tiff_uint(data: bytes, bo: str, entry: int) -> int | None:
    """The first value of the IFD entry at `entry` as a non-negative integer; None for other
    field types, an empty or out-of-file value, or a negative one."""
    kind, count = struct.unpack_from(bo + "HI", data, entry + 2)
    fmt = _TIFF_INT_TYPES.get(kind)
    if fmt is None or count == 0:
        return None
    size = struct.calcsize(fmt)
    at = entry + 8 if count * size <= 4 else struct.unpack_from(bo + "I", data, entry + 8)[0]
    if at + size > len(data):
        return None
    value = int(struct.unpack_from(bo + fmt, data, at)[0])
    return value if value >= 0 else None


def _tiff_first_value(data: bytes, bo: str, entry: int) -> int:
    kind, _ = struct.unpack_from(bo + "HI", data, entry + 2)
    if kind not in (3, 4):
        return 0
    return tiff_uint(data, bo, entry) or 0


def tiff_sample_format(data: bytes) -> str | None:
    """The first page's samples when they are not plain integers of 16 bits or fewer, e.g.
    "64-bit floating-point"; None otherwise or when the header cannot be read."""
    bo, entries = first_ifd(data)
    if not entries:
        return None
    found = {258: 1, 339: 1}  # BitsPerSample, SampleFormat (TIFF defaults)
    for entry in entries:
        (tag,) = struct.unpack_from(bo + "H", data, entry)
        if tag in found:
            found[tag] = _tiff_first_value(data, bo, entry)
    bits, kind = found[258], found[339]
    if kind == 1 and bits <= 16:
        return None
    return f"{bits}-bit {_TIFF_SAMPLE_KINDS.get(kind, f'type-{kind}')}"
