"""The process is stopping: set when a server process gets SIGTERM or SIGINT, before uvicorn
drains its connections (which waits for requests in flight, an upload up to its body
timeout). From then /readyz says 503 `stopping`, the gRPC health service NOT_SERVING and its
watchers hear so at once, so load balancers and clients move away while the process finishes
what it holds (fuzz round 27: a stalled upload kept gRPC watchers told SERVING for 64 s after
SIGTERM, longer than Kubernetes' default 30 s grace)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

logger = logging.getLogger(__name__)

_stopping = threading.Event()
_lock = threading.Lock()
_hooks: list[Callable[[], None]] = []


def stopping() -> bool:
    return _stopping.is_set()


def on_stop(hook: Callable[[], None]) -> Callable[[], None]:
    """Run `hook` (on a thread of its own) once the process starts stopping; returns a function
    that takes it back."""
    with _lock:
        _hooks.append(hook)

    def forget() -> None:
        with _lock:
            if hook in _hooks:
                _hooks.remove(hook)

    return forget


def _run_hooks() -> None:
    with _lock:
        hooks = list(_hooks)
    for hook in hooks:
        try:
            hook()
        except Exception:  # one hook's failure must not keep the others from running
            logger.exception("a stop hook failed")


def begin() -> None:
    """Mark the process stopping and run the hooks on a thread (this may be a signal handler,
    which must not wait on locks the interrupted code may hold)."""
    if _stopping.is_set():
        return
    _stopping.set()
    threading.Thread(target=_run_hooks, name="stopping", daemon=True).start()


class DrainingServer(uvicorn.Server):
    """uvicorn's server that marks the process stopping as soon as a signal asks it to stop."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        begin()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signals, and SIGHUP (a terminal closed) where it is not ignored (worker
        processes ignore it: their parent stops them): one process killed by it at once cut
        off every request in flight (round 44); it drains as SIGTERM does, then SIGHUP is
        raised again for the handler that was there before, as uvicorn does with its own."""
        before = signal.getsignal(signal.SIGHUP)
        if threading.current_thread() is not threading.main_thread() or before == signal.SIG_IGN:
            with super().capture_signals():
                yield
            return
        signal.signal(signal.SIGHUP, self.handle_exit)
        try:
            with super().capture_signals():
                yield
        finally:
            signal.signal(signal.SIGHUP, before)
            if signal.SIGHUP in getattr(self, "_captured_signals", ()):
                signal.raise_signal(signal.SIGHUP)
