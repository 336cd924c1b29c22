"""bench.png_bands: its pictures are what it says (valid 16-bit PNGs of its gradients, every
row filtered as named, encoded a few rows at a time)."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from bench import png_bands


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("kind", [1, 4])
def test_the_16_bit_pictures_decode_to_their_gradients(
    channels: int, kind: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(png_bands, "W", 40)
    monkeypatch.setattr(png_bands, "H", 30)
    monkeypatch.setattr(png_bands, "ROWS", 7)  # rows encoded across several pieces
    data = png_bands.png16(channels, kind)
    decoded = np.asarray(Image.open(io.BytesIO(data)))  # Pillow keeps the high bytes
    want = (png_bands._samples(0, 30, channels) >> 8).astype(np.uint8)
    assert decoded.shape == (30, 40, channels) and np.array_equal(decoded, want)
    stride = 1 + 40 * channels * 2
    rows = zlib.decompress(data[data.index(b"IDAT") + 4 :][:-16])
    assert set(rows[::stride]) == {kind}
