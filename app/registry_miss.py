"""A request naming a model the registry does not serve (a mixin of app.registry's
ModelRegistry): one rate-limited look, so bundles copied in by hand are found without the
poll, and unknown names cannot force a scan per request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from app.bundle_folders import names_shipped_folder
from app.loaded import Fingerprint, LoadedModel, fingerprint
from app.model_refs import split_ref

MISS_RESCAN_S = 0.25  # at most one look per this many seconds per process


class NamedLookups:
    models_dir: Path
    _enabled: set[str]
    _models: dict[str, LoadedModel]
    _prints: dict[str, Fingerprint]
    _refused: dict[str, str]
    _shipped: set[str]
    _pending: set[str]
    _lock: threading.Lock
    _refresh_lock: threading.Lock
    _done: threading.Event
    _stamp_path: str | None
    _last_miss_scan: float

    def _scan_taught(self, *, only_if_stamp_moved: bool) -> bool:
        raise NotImplementedError

    def _load_shipped(self, name: str, directory: Path, fp: Fingerprint) -> None:
        raise NotImplementedError

    def _rescan_on_miss(self, name: str) -> bool:
        """For a name not served: a shipped bundle folder of that name not served yet (or
        refused, changed since) loads in a thread (True: the caller says 503 retry, round 32),
        checked on every miss (a stat), ahead of the rate limit other names share; else one
        rate-limited taught scan, unless the name was refused."""
        if not self._done.is_set():
            return False
        base = split_ref(name)[0]
        with self._lock:
            served, refused = base in self._models, name in self._refused
        if not served and names_shipped_folder(self.models_dir, self._enabled, base):
            return self._load_named(base)
        now = time.monotonic()
        with self._lock:
            if refused or now - self._last_miss_scan < MISS_RESCAN_S:
                return False
            self._last_miss_scan = now
        return self._stamp_path is not None and self._scan_taught(only_if_stamp_moved=False)

    def _load_named(self, name: str) -> bool:
        """Load models_dir/<name> in a thread unless it is loading, or was refused with these
        very files: unpolled, a named folder was never found, or loaded on the event loop."""
        directory = self.models_dir / name
        fp = fingerprint(directory)
        with self._lock:
            if name in self._pending or (name in self._refused and self._prints.get(name) == fp):
                return False
            self._pending.add(name)

        def load() -> None:
            try:
                with self._refresh_lock:
                    self._shipped.add(name)
                    self._load_shipped(name, directory, fingerprint(directory))
            finally:
                with self._lock:
                    self._pending.discard(name)

        threading.Thread(target=load, name=f"load {name}", daemon=True).start()
        return True
