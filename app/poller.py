"""A daemon thread that calls a function every so often, once a start event is set, until it
is stopped: one failure is logged (one line for an OSError, such as running out of file
descriptors; a traceback otherwise) and the call is tried again at the next tick."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class Poller:
    def __init__(
        self,
        name: str,
        work: Callable[[], object],
        seconds: float,
        start_after: threading.Event,
        logger: logging.Logger,
    ) -> None:
        self._work, self._seconds, self._after, self._log = work, seconds, start_after, logger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        self._after.wait()
        while not self._stop.wait(self._seconds):
            try:
                self._work()
            except OSError as exc:
                self._log.warning("%s failed (retrying): %s", self._thread.name, exc)
            except Exception:
                self._log.exception("%s failed", self._thread.name)
