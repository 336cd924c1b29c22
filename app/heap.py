"""Keep full garbage collections short while serving.

What a worker builds at start-up (FastAPI's routes and pydantic schemas, the loaded bundles,
labels, numpy and onnxruntime wrappers) lives as long as the process, yet each full
(generation 2) collection walks every one of those objects again. Measured here with every
shipped model loaded: ~100,000 tracked objects per worker and 44-48 ms per full collection
under load, with the GIL held all along, so the event loop and the pipelines both stopped: a
`/readyz` probe took 45-62 ms instead of ~2 ms while `imagenet` served 8 clients.

`gc.freeze()` once the models are loaded moves them to the permanent generation, which
collections skip, so a full collection walks only what was allocated since. Objects frozen
that later become garbage are still freed by reference counting; only a reference cycle among
them (a model dropped by a reload, say) stays until the process ends.

Freed memory that the C allocator keeps (`HeapTrimmer`): glibc gives each thread that
allocates under contention its own arena (up to 8 per core), and free space inside an arena
goes back to the OS only when it sits at the arena's top. Under a long mixed load (bench/soak.py,
2026-12-04: predicts, catalogs, teach jobs, bad requests) the memory in use stayed flat while
the free memory kept in 16 arenas grew, and RSS with it, about 2 MB a minute. `malloc_trim(0)`
hands every whole free page of every arena back (madvise); a trim once a minute took RSS about
60 MB lower and slowed that growth to about 1.3 MB a minute over 25 minutes, without stopping
it (docs/operations.md, "Soak"). The server now prefers jemalloc (app/allocator.py), which
kept RSS flat in the same soak; the trimmer runs only when the process is on glibc.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def freeze_loaded_heap() -> int:
    """Collect what start-up left behind, then freeze the rest; returns how many objects
    the collector no longer walks."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info(
        "start-up heap frozen: %d objects left out of collections (%.0f ms)",
        frozen,
        (time.perf_counter() - t0) * 1e3,
    )
    return frozen


def _libc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class HeapTrimmer:
    """A daemon thread that calls `malloc_trim(0)` every `interval_s` seconds (0: never)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.trims = 0
        self._trim = _libc_trim() if interval_s > 0 else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self._trim is not None

    def trim_now(self) -> float:
        """Trim once; returns the milliseconds it took (0.0 when inactive)."""
        if self._trim is None:
            return 0.0
        t0 = time.perf_counter()
        self._trim(0)
        self.trims += 1
        return (time.perf_counter() - t0) * 1e3

    def start(self) -> None:
        if self._trim is None or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                ms = self.trim_now()
                logger.debug("malloc_trim: %.1f ms", ms)

        self._thread = threading.Thread(target=loop, name="heap-trim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
