"""A lossless JPEG (SOF3, ITU T.81 annex H) writer for tests: Pillow reads such files
(libjpeg-turbo 3) but writes none. Predictor 1 (the sample to the left), 8-bit samples, one
Huffman table in which every difference category 0-8 has a 4-bit code."""

from __future__ import annotations

import struct

import numpy as np

_MAX_CATEGORY = 8  # 8-bit samples: differences within -255..255


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def _differences(plane: np.ndarray) -> np.ndarray:
    """Annex H.1.2.1: the first row predicts from the left (its first sample from 128), the
    first column from above, every other sample from the left."""
    p = plane.astype(np.int32)
    pred = np.empty_like(p)
    pred[:, 1:] = p[:, :-1]
    pred[0, 0] = 128
    pred[1:, 0] = p[:-1, 0]
    return p - pred


def _bits(diffs: np.ndarray) -> np.ndarray:
    """The entropy-coded bits of the differences, in order: 4-bit category code, then the
    category's extra bits (a negative difference as its one's complement)."""
    mag = np.abs(diffs)
    cat = np.zeros_like(mag)
    nz = mag > 0
    cat[nz] = np.floor(np.log2(mag[nz])).astype(np.int32) + 1
    extra = np.where(diffs < 0, diffs + (1 << cat) - 1, diffs)
    word = (cat.astype(np.int64) << cat) | extra  # code (= category) then the extra bits
    length = 4 + cat
    width = 4 + _MAX_CATEGORY
    shifts = length[:, None] - 1 - np.arange(width)[None, :]
    bits = (word[:, None] >> np.maximum(shifts, 0)) & 1
    return bits[shifts >= 0].astype(np.uint8)


def lossless_jpeg(pixels: np.ndarray, *, width: int = 0, height: int = 0) -> bytes:
    """The (h, w) gray or (h, w, 3) RGB uint8 array as a lossless JPEG (RGB stored as is, an
    Adobe marker saying so). `width`/`height`: other sizes written in the frame header (a file
    whose header claims more pixels than it codes)."""
    planes = pixels[..., None] if pixels.ndim == 2 else pixels
    h, w, n = planes.shape
    diffs = np.stack([_differences(planes[..., c]) for c in range(n)], axis=-1).reshape(-1)
    step = 1 << 20  # samples at a time: _bits holds 12 int64 a sample
    bits = np.concatenate([_bits(diffs[i : i + step]) for i in range(0, len(diffs), step)])
    bits = np.concatenate([bits, np.ones(-len(bits) % 8, np.uint8)])  # padded with 1s
    data = np.packbits(bits).tobytes().replace(b"\xff", b"\xff\x00")
    counts = bytes([0, 0, 0, _MAX_CATEGORY + 1] + [0] * 12)  # nine 4-bit codes
    huffman = _segment(0xC4, b"\x00" + counts + bytes(range(_MAX_CATEGORY + 1)))
    adobe = _segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0)) if n == 3 else b""
    comps = b"".join(bytes([c + 1, 0x11, 0]) for c in range(n))
    frame = _segment(0xC3, struct.pack(">BHHB", 8, height or h, width or w, n) + comps)
    scan_comps = b"".join(bytes([c + 1, 0x00]) for c in range(n))
    scan = _segment(0xDA, bytes([n]) + scan_comps + bytes([1, 0, 0]))  # predictor 1
    return b"\xff\xd8" + adobe + huffman + frame + scan + data + b"\xff\xd9"
