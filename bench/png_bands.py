"""Large PNGs decoded a band of rows at a time (app.png_bands, the server's path) against
Pillow decoding them whole, in one run: the time to prepare each for the imagenet model and the
peak memory that adds, with their ratios.

Pictures: 40 MP (7300x5470, just under the default IMGCLASS_MAX_IMAGE_PIXELS) gradients made
here, as 16-bit RGB and RGBA with every row filtered Sub and with every row filtered Paeth (the
cheapest and the dearest filter to undo; encoders mix them), and as 8-bit RGBA written by
Pillow. "whole": the same preparation with banding turned off (app.png_bands.MIN_BYTES above
any picture), so Pillow decodes the whole picture before it is reduced. Each way runs in a
fresh child process (bench.prepare_child): the median time of `--runs` preparations, and the
peak memory they add.

Usage: .venv/bin/python -m bench.png_bands [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.prepare_child import in_child

W, H = 7300, 5470
ROWS = 256  # rows encoded at a time (a 40 MP picture's filters whole took gigabytes)


def _samples(y0: int, y1: int, channels: int) -> np.ndarray:
    """Rows y0..y1 of smooth 16-bit gradients (every byte of a sample varies)."""
    y = np.arange(y0, y1, dtype=np.int64)[:, None]
    x = np.arange(W, dtype=np.int64)[None, :]
    planes = [x * 7 + y * 3, x * 5 + y * 11, 65535 - x * 3 - y, 40000 + y + 0 * x][:channels]
    return np.stack([p % 65536 for p in np.broadcast_arrays(*planes)], -1).astype(">u2")


def _filtered(rows: np.ndarray, above: np.ndarray, kind: int, bpp: int) -> np.ndarray:
    """PNG filter `kind` (1 Sub, 4 Paeth) of byte rows, `above` the row before them."""
    cur = rows.astype(np.int16)
    up = np.vstack([above[None, :], rows[:-1]]).astype(np.int16)
    left = np.pad(cur, ((0, 0), (bpp, 0)))[:, :-bpp]
    if kind == 1:
        guess = left
    else:
        upleft = np.pad(up, ((0, 0), (bpp, 0)))[:, :-bpp]
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        guess = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    out = ((cur - guess) & 0xFF).astype(np.uint8)
    return np.hstack([np.full((len(rows), 1), kind, np.uint8), out])


def png16(channels: int, kind: int) -> bytes:
    """A 16-bit RGB(A) PNG of W x H gradient samples, every row filtered `kind`."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    z, parts = zlib.compressobj(6), []
    above = np.zeros(W * channels * 2, np.uint8)
    for y0 in range(0, H, ROWS):
        samples = _samples(y0, min(H, y0 + ROWS), channels)
        raw = samples.reshape(len(samples), W * channels).view(np.uint8)
        parts.append(z.compress(_filtered(raw, above, kind, channels * 2).tobytes()))
        above = raw[-1]
    parts.append(z.flush())
    header = struct.pack(">IIBBBBB", W, H, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    idat = b"".join(parts)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def png8_rgba() -> bytes:
    rgba = np.concatenate(
        [(_samples(y0, min(H, y0 + ROWS), 4) >> 8).astype(np.uint8) for y0 in range(0, H, ROWS)]
    )
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG", compress_level=6)
    return buf.getvalue()


CASES: dict[str, Callable[[], bytes]] = {
    "16-bit RGB, Sub rows": lambda: png16(3, 1),
    "16-bit RGB, Paeth rows": lambda: png16(3, 4),
    "16-bit RGBA, Sub rows": lambda: png16(4, 1),
    "16-bit RGBA, Paeth rows": lambda: png16(4, 4),
    "8-bit RGBA (Pillow's)": png8_rgba,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"40 MP PNGs ({W}x{H}) prepared for imagenet; median of {args.runs}, fresh processes")
    head = f"{'picture':25s} {'file MB':>8s} {'bands ms':>9s} {'whole ms':>9s} {'ratio':>6s}"
    print(head + f" {'bands +MiB':>11s} {'whole +MiB':>11s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "picture.png"
        for name, make in CASES.items():
            data = make()
            path.write_bytes(data)
            bands_ms, bands_mib = in_child(path, args.runs)
            whole_ms, whole_mib = in_child(path, args.runs, whole=True)
            print(
                f"{name:25s} {len(data) / 1e6:>8.1f} {bands_ms:>9.0f} {whole_ms:>9.0f}"
                f" {bands_ms / whole_ms:>6.2f} {bands_mib:>11.0f} {whole_mib:>11.0f}"
                f" {bands_mib / max(whole_mib, 1.0):>6.2f}"
            )


if __name__ == "__main__":
    main()
