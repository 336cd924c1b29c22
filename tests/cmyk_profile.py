"""A CMYK ICC profile written in code (none may be downloaded): ICC v2, output class, PCS Lab,
one A2B0 table (`mft2`, 16-bit) from a simple ink model on a 5-point grid. littlecms needs no
B2A0 for CMYK -> sRGB. Used by tests/app/test_colour_cmyk.py and bench/cmyk.py."""

from __future__ import annotations

import itertools
import struct

import numpy as np

D50 = np.array([0.9642, 1.0, 0.8249])
# linear sRGB -> XYZ, D50-adapted (Bradford), as ICC profiles store sRGB
SRGB_D50 = np.array([[0.4361, 0.3851, 0.1431], [0.2225, 0.7169, 0.0606], [0.0139, 0.0971, 0.7141]])
# what each ink at full coverage lets through of red, green and blue light; and the paper
INKS = np.array([[0.12, 0.80, 0.95], [0.90, 0.22, 0.75], [0.97, 0.90, 0.15], [0.10, 0.10, 0.10]])
PAPER = np.array([0.92, 0.92, 0.90])


def ink_lab(cmyk: np.ndarray) -> np.ndarray:
    """CIELAB (D50) of ink coverages in 0-1 (last axis C, M, Y, K), by the ink model."""
    cover = np.asarray(cmyk, dtype=float)[..., None]
    reflected = PAPER * np.prod(1 - cover * (1 - INKS), axis=-2)
    xyz = reflected @ SRGB_D50.T / D50
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def lab_to_xyz(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    return np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * D50


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def cmyk_profile(grid: int = 5, space: bytes = b"CMYK", device: bytes = b"prtr") -> bytes:
    """The profile's bytes (about 4 KB at 5 points a side)."""
    nodes = np.array(list(itertools.product(np.linspace(0, 1, grid), repeat=4)))  # C slowest
    lab = ink_lab(nodes)
    # ICC v2 16-bit Lab: L 0-100 -> 0-0xFF00, a and b -128..128 -> 0-0xFFFF
    coded = np.stack([lab[:, 0] * 652.8, (lab[:, 1] + 128) * 256, (lab[:, 2] + 128) * 256], -1)
    table = np.clip(np.rint(coded), 0, 65535).astype(">u2").tobytes()
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    straight = struct.pack(">2H", 0, 65535)  # two-entry input and output curves
    a2b0 = (
        b"mft2\0\0\0\0"
        + bytes([4, 3, grid, 0])
        + identity
        + struct.pack(">HH", 2, 2)
        + straight * 4
        + table
        + straight * 3
    )
    desc = b"imgclass test CMYK\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(desc)) + desc + b"\0" * 79,
        b"wtpt": b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in D50),
        b"A2B0": a2b0,
    }
    index, body = b"", b""
    start = 128 + 4 + 12 * len(tags)
    for name, data in tags.items():
        index += name + struct.pack(">II", start + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    header = (
        struct.pack(">I", start + len(body))
        + b"none"
        + bytes([2, 0x10, 0, 0])
        + device
        + space
        + b"Lab "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + b"".join(_s15(v) for v in D50)
        + b"\0" * 48
    )
    return header + struct.pack(">I", len(tags)) + index + body
