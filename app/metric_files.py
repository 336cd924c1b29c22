"""prometheus-client's multiprocess metric files when the process has no file descriptor free:
updates wait, in order, instead of raising; the files grow safely; a scrape that cannot read
them says so.

A worker opens its file of a kind (counter, histogram, live gauge) when its first series of
that kind appears, and maps a file again (a duplicated descriptor) each time it doubles: both
happen inside a request. Out of descriptors (round 40, a hard limit of 200), the failed open
was retried, and raised, on every request; a failed doubling left the library's size doubled
over the old, smaller map, so every later new series in that process failed for good.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import logging
import mmap
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from prometheus_client import mmap_dict, multiprocess, values
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from app.errors import StorageUnavailable

logger = logging.getLogger(__name__)

OUT_OF_FDS: Final = (errno.EMFILE, errno.ENFILE)
# Updates kept while no descriptor is free (a closure each, ~0.3 KiB): 3 MiB at most; those
# beyond are dropped and counted in the log line that ends the episode.
PENDING_MAX: Final = 10_000


class _GrowingSafely(mmap_dict.MmapedDict):
    """The library's MmapedDict, whose `_init_value` maps the larger file before it records
    the new size: a map the system refuses (no descriptor free) changes nothing, and the
    series is added once it can be (0.26.0's body otherwise)."""

    def _init_value(self, key: str) -> None:
        encoded = key.encode("utf-8")
        padded = encoded + (b" " * (8 - (len(encoded) + 4) % 8))
        value = struct.pack(f"i{len(padded)}sdd".encode(), len(encoded), padded, 0.0, 0.0)
        capacity = self._capacity
        while self._used + len(value) > capacity:
            capacity *= 2
        if capacity != self._capacity:
            self._f.truncate(capacity)  # larger is harmless: readers stop at `used`
            self._m = mmap.mmap(self._f.fileno(), capacity)  # OSError: nothing has changed
            self._capacity = capacity
        self._m[self._used : self._used + len(value)] = value
        self._used += len(value)
        mmap_dict._pack_integer(self._m, 0, self._used)  # type: ignore[no-untyped-call]
        self._positions[key] = self._used - 16


# sha256 of the library's `MmapedDict._init_value` source that `_GrowingSafely` rewrites
# (prometheus-client 0.26.0): another version's layout code is left as it is.
_REWRITTEN: Final = "b07be9310c2735ae5fcc781bbd42b025ed12f193c02542df6d274b84c3a07d0e"


def install(rewritten: str = _REWRITTEN) -> bool:
    """Use `_GrowingSafely` for the files this process opens from now on (before its first
    metric: app.telemetry calls this on import), only when the library's method is the one it
    rewrites (`rewritten`); True when it does."""
    try:
        source = inspect.getsource(mmap_dict.MmapedDict._init_value)
    except (OSError, TypeError, AttributeError):  # no source shipped: keep the library's
        return False
    if hashlib.sha256(source.encode()).hexdigest() != rewritten:
        logger.debug("prometheus-client's MmapedDict differs from the one checked; kept as is")
        return False
    values.MmapedDict = _GrowingSafely  # type: ignore[attr-defined]
    return True


class _Deferred:
    """Metric updates that could not open or grow their file, applied in order once they can."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: deque[Callable[[], None]] = deque()
        self.dropped = 0
        self.kept = 0

    def update(self, change: Callable[[], None]) -> None:
        with self.lock:
            if self.pending and not self._flush():
                self._defer(change)
                return
            try:
                change()
            except OSError as exc:
                if exc.errno not in OUT_OF_FDS:
                    raise
                logger.warning(
                    "no file descriptor free for the metrics files (%s): updates wait, in "
                    "order (up to %d), until one is",
                    exc.strerror,
                    PENDING_MAX,
                )
                self._defer(change)

    def flush(self) -> None:
        with self.lock:
            if self.pending:
                self._flush()

    def _defer(self, change: Callable[[], None]) -> None:
        if len(self.pending) < PENDING_MAX:
            self.pending.append(change)
            self.kept += 1
        else:
            self.dropped += 1

    def _flush(self) -> bool:
        """Apply what waits, oldest first; False when a descriptor is still missing."""
        while self.pending:
            try:
                self.pending[0]()
            except OSError as exc:
                if exc.errno in OUT_OF_FDS:
                    return False
                self.pending.popleft()
                raise
            self.pending.popleft()
        logger.info(
            "metrics files writable again: %d waiting updates applied, %d dropped",
            self.kept,
            self.dropped,
        )
        self.kept = self.dropped = 0
        return True


_deferred = _Deferred()


def update(change: Callable[[], None]) -> None:
    """Apply `change`, one update of one metric (e.g. `lambda: C.labels(x).inc()`), now; or,
    while the process has no file descriptor free for its metric files, later and in order:
    at the next update or scrape that finds one."""
    _deferred.update(change)


def flush() -> None:
    """Apply the updates still waiting, if a descriptor is free now."""
    _deferred.flush()


class FolderCollector(Collector):
    """Every process's metric files in `path` (prometheus-client's MultiProcessCollector,
    whose listing of the folder came back empty out of descriptors: /metrics answered 200
    without a single request metric). Out of descriptors: StorageUnavailable (503)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        try:
            files = [str(self.path / n) for n in os.listdir(self.path) if n.endswith(".db")]
            merged: Iterable[Metric] = multiprocess.MultiProcessCollector.merge(files)  # type: ignore[no-untyped-call]
        except OSError as exc:
            if exc.errno not in OUT_OF_FDS:
                raise
            raise StorageUnavailable(
                "The server has no file descriptors free right now to read its metrics "
                "files (too many open connections or files). Retry shortly.",
                retry_after_s=1,
            ) from None
        return merged
