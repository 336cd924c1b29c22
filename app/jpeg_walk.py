"""The structure of a JPEG file walked without decoding it: how many scans it has, how it
is coded, and how many coefficients libjpeg will hold (app/imaging.py refuses by these)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

from app.errors import too_complex

# Segments beyond which a file is refused before Pillow parses it (real files have 10-30).
MAX_JPEG_SEGMENTS: Final = 5_000
# A marker inside JPEG entropy-coded data: 0xFF followed by anything but 00 (stuffing),
# FF (fill) or D0-D7 (restart markers).
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
# Markers that stand alone (no length field).
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})


# Arithmetic-coded frames (SOF9-11, SOF13-15). libjpeg's arithmetic decoder cannot suspend for
# more input, so such a file must reach it in one feed: Pillow feeds 64 KiB at a time, and a
# valid arithmetic JPEG over that size was refused as damaged (round 29).
_JPEG_ARITHMETIC_SOF: Final = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


# Progressive frame headers (SOF2, SOF6, SOF10, SOF14): libjpeg keeps every coefficient of the
# image until the last scan, 2 bytes a component sample, whatever the output scale. So does a
# sequential frame in several scans.
_JPEG_PROGRESSIVE_SOF: Final = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Lossless frame headers (SOF3, SOF7, SOF11, SOF15): no DCT, so libjpeg cannot scale while it
# decodes (Pillow's draft broke such a file: "damaged"); the picture is decoded at full size.
_JPEG_LOSSLESS_SOF: Final = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
# Frame headers of coding processes libjpeg does not decode: hierarchical (differential,
# SOF5-7, SOF13-15) and JPEG-LS (SOF55, ITU-T T.87: another codec in JPEG's markers).
_JPEG_UNDECODED: Final = {
    **dict.fromkeys((0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF), "hierarchical (differential) JPEG"),
    0xF7: "JPEG-LS",
}


@dataclass(frozen=True)
class JpegStructure:
    scans: int  # SOS segments, counted up to the cap + 1
    arithmetic: bool  # an arithmetic-coded frame header was seen
    progressive: bool = False  # a progressive frame header was seen
    samples: float = 0.0  # component samples a pixel (3 for 4:4:4 colour, 1.5 for 4:2:0)
    lossless: bool = False  # a lossless frame header was seen
    precision: int = 0  # bits a sample in the first frame header (0: none seen)
    frame: int = 0  # the first frame header's marker (0: none seen)

    @property
    def undecoded(self) -> str | None:
        """The name of a coding process libjpeg does not decode, or None."""
        return _JPEG_UNDECODED.get(self.frame)

    @property
    def buffered(self) -> bool:
        """Whether libjpeg holds the whole image's coefficients (progressive, or in scans)."""
        return self.progressive or self.scans > 1


def _samples(segment: bytes) -> float:
    """Component samples a pixel, from a frame header's body (after its length): each
    component's sampling factors against the largest."""
    n = segment[5] if len(segment) > 5 else 0
    factors = [(b >> 4, b & 15) for b in segment[7 : 6 + 3 * n : 3]]
    hmax, vmax = max((h for h, _ in factors), default=0), max((v for _, v in factors), default=0)
    if not factors or hmax * vmax == 0:
        return 0.0
    return sum(h * v for h, v in factors) / (hmax * vmax)


def count_jpeg_scans(data: bytes, cap: int) -> int:
    return jpeg_structure(data, cap).scans


def jpeg_structure(data: bytes, cap: int) -> JpegStructure:
    """Number of SOS segments (scans), counted up to cap + 1, and the coding. Walks segment
    lengths and, in entropy-coded data, jumps from marker to marker with a regex: linear in
    the data size. Refuses (413) a file with more than MAX_JPEG_SEGMENTS segments before that."""
    pos, scans, n, segments, arithmetic = 2, 0, len(data), 0, False
    progressive, lossless, samples, precision, frame = False, False, 0.0, 0, 0
    while pos + 4 <= n and scans <= cap:
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise too_complex("JPEG", f"more than {MAX_JPEG_SEGMENTS:,} segments", "about 10-30")
        if data[pos] != 0xFF:
            m = _JPEG_MARKER.search(data, pos)
            if m is None:
                break
            pos = m.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if (marker in _JPEG_SOF or marker == 0xF7) and not frame:  # the first frame header
            frame, samples = marker, _samples(data[pos + 4 : pos + 2 + length])
            progressive = marker in _JPEG_PROGRESSIVE_SOF
            lossless = marker in _JPEG_LOSSLESS_SOF
            precision = data[pos + 4] if pos + 4 < n else 0
        pos += 2 + max(length, 2)
        arithmetic = arithmetic or marker in _JPEG_ARITHMETIC_SOF
        if marker == 0xDA:
            scans += 1
            m = _JPEG_MARKER.search(data, pos)
            if m is None:
                break
            pos = m.start()
    return JpegStructure(scans, arithmetic, progressive, samples, lossless, precision, frame)


def lossless_bytes(samples: float) -> float:
    """Bytes a pixel that decoding a lossless JPEG whole costs: Pillow's full-size image (1 a
    pixel in gray, 4 in colour) plus, for a file in several scans, libjpeg's whole-image buffer
    (a byte a component sample; counted for every lossless file)."""
    return (1.0 if samples <= 1 else 4.0) + max(samples, 1.0)
