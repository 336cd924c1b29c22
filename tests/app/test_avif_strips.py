"""app.avif_strips: an AVIF's frame turned into RGB a strip at a time from libavif's planes has
the pixels of Pillow's whole decode (every subsampling, alpha, 8/10/12 bits, any strip height),
a damaged one is a 422, and a large one never becomes a full-size RGB copy."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import AvifImagePlugin, Image

from app import avif_strips
from app.avif_strips import avif_frame
from app.bundle import InputSpec
from app.errors import InvalidImage
from app.imaging import ImageLimits, prepare
from tests.images import encode

RGB224 = InputSpec(height=224, width=224, channels=3, color="rgb")
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "avif"


def _pillow(data: bytes) -> np.ndarray:
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert(img.mode))


def _strips(data: bytes, rows: int) -> np.ndarray:
    with avif_frame(data) as frame:
        assert frame is not None, "Pillow's libavif is one avif_strips knows"
        parts = [strip.copy() for _, strip in frame.strips(rows)]
    return np.concatenate(parts)


def _noise(h: int, w: int, channels: int, top: int) -> np.ndarray:
    rng = np.random.default_rng(h * w + channels)
    small = rng.integers(0, top, (h // 8 + 2, w // 8 + 2, channels)).astype(np.float32)
    big = np.asarray(
        [
            np.asarray(Image.fromarray(small[..., c]).resize((w, h), Image.BILINEAR))
            for c in range(channels)
        ]
    )
    return np.moveaxis(big, 0, -1).round().astype(np.uint16)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_strips_have_the_pixels_of_pillows_whole_decode(mode: str, subsampling: str) -> None:
    pixels = _noise(203, 301, len(mode), 256).astype(np.uint8)  # odd sides: half chroma rows
    data = encode(Image.fromarray(pixels, mode), "AVIF", quality=60, subsampling=subsampling)
    whole = _pillow(data)
    for rows in (1, 2, 7, 64, 1000):  # 1 and 7 are taken as 2 and 8 (views start on even rows)
        assert np.array_equal(_strips(data, rows), whole), rows


@pytest.mark.parametrize("name", ["10bit-420-rgb", "12bit-422-rgb", "12bit-444-rgba"])
def test_deep_avifs_are_turned_to_8_bits_as_pillow_does(name: str) -> None:
    """10 and 12 bits a sample (16-bit planes; tests/fixtures/README.md says how they were made:
    the encoder in Pillow's wheel writes 8 bits only)."""
    data = (FIXTURES / f"{name}.avif").read_bytes()
    whole = _pillow(data)
    assert whole.shape == (77, 130, 4 if name.endswith("rgba") else 3)
    assert np.array_equal(_strips(data, 6), whole)


def test_a_frame_cut_short_is_a_422_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.strip_plans.MIN_BYTES", 0)  # small AVIFs go by strips too
    data = encode(Image.fromarray(_noise(300, 400, 3, 256).astype(np.uint8)), "AVIF", quality=80)
    for keep in (0.5, 0.9, 0.99):
        with pytest.raises(InvalidImage):
            prepare(data[: int(len(data) * keep)], RGB224, ImageLimits())
    with pytest.raises(avif_strips.AvifFailed), avif_frame(b"\0\0\0\x18ftypavif" + b"\0" * 40):
        pass


def test_an_unknown_libavif_falls_back_to_pillows_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.fromarray(_noise(300, 400, 3, 256).astype(np.uint8)), "AVIF", quality=80)
    monkeypatch.setattr("app.strip_plans.MIN_BYTES", 0)
    ours = prepare(data, RGB224, ImageLimits()).array
    monkeypatch.setattr(avif_strips, "_load", lambda: None)
    with avif_frame(data) as frame:
        assert frame is None
    assert np.array_equal(prepare(data, RGB224, ImageLimits()).array, ours)


_PEAK = """
import io, resource, sys
import numpy as np
from PIL import Image
sys.path.insert(0, {root!r})
from app.bundle import InputSpec
from app.imaging import ImageLimits, prepare
data = open({path!r}, "rb").read()
spec = InputSpec(height=224, width=224, channels=3, color="rgb")
small = io.BytesIO(); Image.new("RGB", (64, 64)).save(small, "AVIF")
prepare(small.getvalue(), spec, ImageLimits())  # libraries loaded before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prepare(data, spec, ImageLimits())
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.slow  # about 4 s to encode
def test_a_large_avif_adds_a_fraction_of_its_rgb_size(tmp_path: Path) -> None:
    """A 12 MP AVIF: its RGB alone is 34 MiB, and Pillow's decode held three full copies
    (+99 MiB for 13 MP, round 36); by strips, the 4:2:0 planes and a strip (+27)."""
    pixels = _noise(3000, 4000, 3, 256).astype(np.uint8)
    path = tmp_path / "big.avif"
    path.write_bytes(encode(Image.fromarray(pixels), "AVIF", quality=40, speed=10))
    script = _PEAK.format(root=str(ROOT), path=str(path))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, check=True
    )
    assert int(out.stdout.split()[-1]) < 34, out.stdout
