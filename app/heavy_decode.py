"""At most one large whole-picture decode at a time in the whole serving tree.

Most pictures are decoded a band at a time or straight at a reduced size: tens of MiB at most.
Some kinds are decoded whole: AVIF (up to 8.5 bytes a pixel at peak), animated and lossless
WebP, interlaced colour PNG, run-length-encoded BMP, progressive JPEG (its coefficients), TIFF
pages that cannot be split. Their own pixel limits (app/image_limits.py) keep one such decode to about 150 MiB of
the tree, but the decode slots (one per core) are each worker's own: with two workers four ran
together, and four requests at a time over the hostile corpus took the default tree to 621 MiB
(round 35). A decode estimated over HEAVY_BYTES therefore holds this lock: a lock of the
process's own, then a file lock (flock) on the file the parent names in HEAVY_LOCK_ENV for its
workers. The kernel releases a file lock when its process ends, so a worker that dies holding
it blocks no one. With no file named (one worker, or tests) the process's lock is the tree's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from app.errors import NotReady
from app.jpeg_walk import lossless_bytes

logger = logging.getLogger(__name__)

HEAVY_LOCK_ENV: Final = "IMGCLASS_HEAVY_DECODE_LOCK"
# Decodes estimated over this take the lock; banded and reduced decodes stay under it.
HEAVY_BYTES: Final = 48 * 1024 * 1024
# Peak bytes a pixel of the kinds decoded whole (measured: bench/avif.py, docs/hardening.md).
_PER_PIXEL: Final = {
    "AVIF": 8.5,  # by strips (app/avif_strips): 2 for 8-bit 4:2:0, 7 for 12-bit 4:4:4; kept high
    "HEIF": 6.0,  # libheif's YUV planes, then its RGB picture read in strips: 5.7 at 13 MP
    "animated WebP": 16.0,
    "lossless WebP": 4.0,
    "interlaced PNG": 4.0,
    "run-length-encoded BMP": 3.0,
    "TIFF decoded whole": 7.0,
}
_POLL_S: Final = 0.005

_local = threading.Lock()
_fd: int | None = None
_fd_lock = threading.Lock()


def whole_cost(kind: str, pixels: int, samples: float = 0.0) -> int:
    """Estimated peak bytes of decoding a picture of this kind whole (0: not decoded whole).
    A progressive JPEG holds 2 bytes a component sample, `samples` a pixel; a lossless one,
    app.jpeg_walk.lossless_bytes."""
    if kind == "progressive JPEG":
        return int(2 * samples * pixels)
    if kind == "lossless JPEG":
        return int(lossless_bytes(samples) * pixels)
    return int(_PER_PIXEL.get(kind, 0.0) * pixels)


def _lock_file() -> int | None:
    """The tree's lock file, opened once per process; None when there is none."""
    global _fd
    with _fd_lock:
        path = os.environ.get(HEAVY_LOCK_ENV)
        if _fd is None and path:
            try:
                _fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:  # this worker's own lock still holds
                logger.warning("heavy-decode lock file unusable (%s): per worker only", exc)
                os.environ.pop(HEAVY_LOCK_ENV, None)
        return _fd


def _busy(waited: float) -> NotReady:
    return NotReady(
        f"The server is busy decoding another large image (waited {waited:g} s); retry shortly."
    )


@contextmanager
def heavy_slot(cost: int, wait_s: float) -> Iterator[None]:
    """Hold the tree's heavy-decode lock for a decode of `cost` bytes over HEAVY_BYTES, waiting
    at most `wait_s` (then a 503); a lighter decode goes at once."""
    if cost <= HEAVY_BYTES:
        yield
        return
    start = time.monotonic()
    if not _local.acquire(timeout=wait_s):
        raise _busy(wait_s)
    try:
        fd = _lock_file()
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > wait_s:
                    raise _busy(wait_s) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        _local.release()
