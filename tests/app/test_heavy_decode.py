"""app.heavy_decode: one large whole-picture decode at a time in the serving tree (round 35:
four requests at a time over the hostile corpus took two workers' tree to 621 MiB), across
processes through a file lock the parent names, and never for banded or reduced decodes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from app import heavy_decode
from app.bundle import InputSpec
from app.errors import NotReady
from app.heavy_decode import HEAVY_BYTES, HEAVY_LOCK_ENV, heavy_slot, whole_cost
from app.imaging import ImageLimits, prepare
from tests.images import encode

RGB = InputSpec(height=32, width=32, channels=3, color="rgb")
MB = 1024 * 1024


def test_the_cost_of_each_kind_decoded_whole() -> None:
    assert whole_cost("AVIF", 12_000_000) == 102_000_000
    assert whole_cost("lossless WebP", 26_000_000) == 104_000_000
    assert whole_cost("progressive JPEG", 30_000_000, 1.5) == 90_000_000
    assert whole_cost("progressive JPEG", 10_000_000, 3.0) == 60_000_000
    assert whole_cost("TIFF decoded whole", 13_000_000) == 91_000_000
    assert whole_cost("lossless JPEG", 11_000_000, 3.0) == 77_000_000  # 4 + 3 bytes a pixel
    assert whole_cost("lossless JPEG", 39_000_000, 1.0) == 78_000_000
    assert whole_cost("run-length-encoded BMP", 26_000_000) == 78_000_000
    for kind in ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP"):  # banded, reduced or streamed
        assert whole_cost(kind, 40_000_000) == 0


def _hold(cost: int, seconds: float, started: threading.Event) -> None:
    with heavy_slot(cost, 5.0):
        started.set()
        time.sleep(seconds)


@pytest.fixture
def own_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh lock file for this test, as the parent names it for its workers."""
    path = tmp_path / "heavy.lock"
    monkeypatch.setenv(HEAVY_LOCK_ENV, str(path))
    monkeypatch.setattr(heavy_decode, "_fd", None)
    return path


def test_heavy_decodes_wait_for_each_other_and_light_ones_do_not(own_lock: Path) -> None:
    started = threading.Event()
    holder = threading.Thread(target=_hold, args=(HEAVY_BYTES + 1, 0.4, started))
    holder.start()
    assert started.wait(5)
    t0 = time.monotonic()
    with heavy_slot(HEAVY_BYTES, 5.0):  # at the threshold: light
        assert time.monotonic() - t0 < 0.1
    with pytest.raises(NotReady, match="busy decoding another"), heavy_slot(HEAVY_BYTES + 1, 0.1):
        pass
    with heavy_slot(HEAVY_BYTES + 1, 5.0):  # waits for the holder
        assert time.monotonic() - t0 >= 0.3
    holder.join()


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_another_process_holding_the_file_lock_holds_this_one(own_lock: Path) -> None:
    """Workers share the lock through the file; a worker that dies releases it."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(own_lock), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(NotReady), heavy_slot(HEAVY_BYTES + 1, 0.2):
            pass
        child.kill()  # dies holding it: the kernel lets it go
        child.wait(10)
        t0 = time.monotonic()
        with heavy_slot(HEAVY_BYTES + 1, 5.0):
            assert time.monotonic() - t0 < 1.0
    finally:
        child.kill()


def test_decoding_a_large_whole_picture_takes_the_lock(
    own_lock: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lossless WebP over the threshold waits for the lock (here held by another thread);
    a JPEG of the same size, decoded reduced, does not."""
    monkeypatch.setattr(heavy_decode, "HEAVY_BYTES", 4 * 300 * 200 - 1)
    monkeypatch.setattr("app.imaging.SLOT_WAIT_S", 0.2)
    picture = Image.new("RGB", (300, 200), (30, 90, 200))
    started = threading.Event()
    holder = threading.Thread(target=_hold, args=(MB * 1024, 1.0, started))
    holder.start()
    assert started.wait(5)
    try:
        with pytest.raises(NotReady):
            prepare(encode(picture, "WEBP", lossless=True), RGB, ImageLimits())
        assert prepare(encode(picture, "JPEG"), RGB, ImageLimits()).info.width == 300
    finally:
        holder.join()
    assert prepare(encode(picture, "WEBP", lossless=True), RGB, ImageLimits()).info.width == 300
