"""ModelRegistry: find bundles, verify, load, warm up; get(name) or ModelNotFound/NotReady.

Two sources: shipped bundles (`models_dir/<name>/`) and taught bundles (`taught_dir/<name>/
<version>/`, head-only graphs on a shipped backbone). `refresh()` follows the disk (bundles added,
replaced or removed are loaded or dropped without a restart; `start_watching` polls it). Taught
changes made through the app bump a stamp file (app/teach/stamp.py) that `get()` checks with one
os.stat, so every process on the host serves them at once. Model names: app.model_refs; bundle
folders and opening one: app.bundle_folders.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Literal

from app import draining
from app.bundle import load_bundle
from app.bundle_folders import (
    BackboneNotServed,
    RemovedWhileLoading,
    open_and_warm,
    open_taught,
    shipped_folders,
    taught_folders,
)
from app.errors import ModelNotFound, NotReady
from app.loaded import AGAIN, Fingerprint, Read, Reload, fingerprint, version_key
from app.loaded import LoadedModel as LoadedModel
from app.loaded import ServedModel as ServedModel
from app.model_refs import VERSION_SEP, missing_model, refused_model, split_ref
from app.poller import Poller
from app.registry_miss import NamedLookups
from app.runtime import OnnxModel, choose_providers
from app.teach.served import TaughtModel
from app.teach.stamp import Stamp, read_stamp, stamp_path

logger = logging.getLogger(__name__)


class ModelRegistry(NamedLookups):
    """Holds every servable bundle. Thread-safe: loading may run in a background thread."""

    def __init__(
        self,
        models_dir: Path,
        *,
        taught_dir: Path | None = None,
        providers: str = "auto",
        intra_op_threads: int = 0,
        warmup_runs: int = 2,
        enabled: list[str] | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.taught_dir = taught_dir
        self._providers = choose_providers(providers)  # fails fast on an impossible setting
        self._threads = intra_op_threads
        self._warmup_runs = warmup_runs
        self._enabled = set(enabled or [])
        self._models: dict[str, LoadedModel] = {}  # shipped, by name
        self._taught: dict[str, dict[str, LoadedModel]] = {}  # name -> version -> model
        self._prints: dict[str, Fingerprint] = {}  # key (name or name@version) -> files
        self._refused: dict[str, str] = {}
        self._shipped: set[str] = set()  # shipped keys found last scan (served or refused)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._done = threading.Event()
        self._watcher: Poller | None = None
        self._stamp_path = stamp_path(taught_dir) if taught_dir is not None else None
        self._seen_stamp: Stamp = None  # the stamp read before the last taught scan began
        self._last_miss_scan = float("-inf")

    # discovery ----------------------------------------------------------------------------
    def discover(self) -> list[Path]:  # shipped bundle candidates
        return shipped_folders(self.models_dir, self._enabled)

    def discover_taught(self) -> list[Path]:  # taught_dir/<name>/<version>/metadata.json
        return taught_folders(self.taught_dir)

    def load_all(self) -> None:
        """Load every bundle; a bad one is refused (logged, reported) and the rest are served."""
        if not self.models_dir.is_dir():
            logger.warning("models directory %s does not exist", self.models_dir)
        with self._lock:
            self._pending = {d.name for d in self.discover()}
            self._pending |= {d.parent.name for d in self.discover_taught()}
        try:
            for _ in range(3):  # again for a bundle that changed while it loaded, even unpolled
                if not self.refresh():
                    break
        except Exception as exc:  # the scan itself failed: serve what loaded, never "loading"
            logger.error("model loading stopped: %s: %s", type(exc).__name__, exc)
        with self._lock:
            self._pending.clear()
        self._done.set()
        counts = len(self._models), sum(map(len, self._taught.values())), len(self._refused)
        logger.info("model loading finished: %d served, %d taught, %d refused", *counts)

    def refresh(self) -> bool:
        """Bring the served set in line with the disk; True when anything changed."""
        with self._refresh_lock:
            stamp = self._read_stamp()
            try:
                changed = self._refresh_shipped()
                changed |= self._refresh_taught(force=changed)
            finally:
                self._seen_stamp = stamp
        return changed

    def _read_stamp(self) -> Stamp:
        return read_stamp(self._stamp_path) if self._stamp_path is not None else None

    def _follow_stamp(self) -> None:
        """Re-scan the taught folder now if a process bumped the stamp since the last scan (one
        os.stat when nothing changed). Callers that see the new stamp wait for the scan."""
        if self._stamp_path is None or not self._done.is_set():
            return
        if read_stamp(self._stamp_path) == self._seen_stamp:
            return
        self._scan_taught(only_if_stamp_moved=True)

    def _scan_taught(self, *, only_if_stamp_moved: bool) -> bool:
        with self._refresh_lock:
            stamp = self._read_stamp()
            if only_if_stamp_moved and stamp == self._seen_stamp:
                return False  # another thread scanned after this stamp appeared
            try:
                return self._refresh_taught(force=False)
            except Exception:  # answer with what is served; the poll retries
                logger.exception("taught model refresh failed")
                return False
            finally:
                self._seen_stamp = stamp

    def _refresh_shipped(self) -> bool:
        found = {d.name: d for d in self.discover()}
        changed = False
        # A folder named like "x@1" is shipped (and refused), not a taught version: the kind is
        # remembered here rather than read from the name.
        for name in sorted((set(self._models) | self._shipped) - set(found)):
            self._drop(name)
            changed = True
        self._shipped = set(found)
        for name, directory in found.items():
            if draining.stopping():  # SIGTERM while loading (round 40: a worker whose parent
                break  # was killed loaded every model, seconds of both cores, then stopped)
            fp = fingerprint(directory)
            if self._prints.get(name) != fp:
                self._load_shipped(name, directory, fp)
                changed = True
        return changed

    def _load_shipped(self, name: str, directory: Path, fp: Fingerprint) -> None:
        self._prints[name] = fp
        model = self._load(name, partial(self._open_shipped, directory), name, (directory, fp))
        if model is not AGAIN:
            with self._lock:
                if model is not None:
                    self._models[name] = model
                else:
                    self._models.pop(name, None)

    def _refresh_taught(self, force: bool) -> bool:
        found = {f"{d.parent.name}{VERSION_SEP}{d.name}": d for d in self.discover_taught()}
        changed = False
        known = {f"{n}{VERSION_SEP}{v}" for n, vs in self._taught.items() for v in vs}
        known |= {k for k in self._refused if VERSION_SEP in k and k not in self._shipped}
        for key in sorted(known - set(found)):
            self._drop(key)
            changed = True
        for key, directory in found.items():
            fp = fingerprint(directory)
            # A backbone reload (force) re-checks every taught model against the new sha.
            if self._prints.get(key) == fp and not force:
                continue
            self._prints[key] = fp
            changed = True
            name, version = key.split(VERSION_SEP, 1)
            opener = partial(self._open_taught, directory, name)
            model = self._load(key, opener, name, (directory, fp))
            if model is AGAIN:
                continue
            with self._lock:
                versions = self._taught.setdefault(name, {})
                if model is not None:
                    versions[version] = model
                else:
                    versions.pop(version, None)
                if not versions:
                    del self._taught[name]
        return changed

    def _drop(self, key: str) -> None:
        with self._lock:
            self._prints.pop(key, None)
            self._refused.pop(key, None)
            if VERSION_SEP in key:
                name, version = key.split(VERSION_SEP, 1)
                versions = self._taught.get(name, {})
                versions.pop(version, None)
                if not versions:
                    self._taught.pop(name, None)
            else:
                self._models.pop(key, None)
        logger.info("bundle %s removed from disk; no longer served", key)

    def _open_shipped(self, directory: Path) -> OnnxModel:
        return OnnxModel(load_bundle(directory), self._providers, self._threads)

    def _open_taught(self, directory: Path, name: str) -> TaughtModel:
        with self._lock:
            shipped = dict(self._models)
        return open_taught(directory, name, shipped, self.discover_names)

    def discover_names(self) -> set[str]:
        return {d.name for d in self.discover()}

    def _load(
        self, key: str, opener: Callable[[], ServedModel], pending: str, read: Read
    ) -> LoadedModel | Literal[Reload.AGAIN] | None:
        """The model, None (refused or gone), or AGAIN: the folder (`read`: it, its fingerprint
        before) changed while read, so the files may mix two bundles (round 26): neither a
        success nor a failure counts, and the next poll loads it again."""
        loaded, reason, other = None, None, None
        try:
            loaded = open_and_warm(key, opener, self._warmup_runs)
        except RemovedWhileLoading:  # not refused: there is nothing left to serve
            logger.info("bundle %s was removed while it was being loaded", key)
        except Exception as exc:  # any failure refuses this bundle only; the rest are served
            reason = str(exc) or type(exc).__name__
            other = exc.backbone if isinstance(exc, BackboneNotServed) else None
        if (loaded or reason) and fingerprint(read[0]) != read[1]:
            with self._lock:  # still pending at start-up: /readyz says loading, a 503 not a 404
                self._prints.pop(key, None)
            logger.info("bundle %s changed while it was loaded; loading it again", key)
            return AGAIN
        if reason is not None:
            logger.error(
                "refusing bundle %s: %s", key, reason, extra={"backbone_not_served": other}
            )
        with self._lock:
            if reason is None:
                self._refused.pop(key, None)
            else:
                self._refused[key] = reason
            self._pending.discard(pending)
        return loaded

    def start_watching(self, poll_seconds: float) -> None:
        """Poll the model folders every `poll_seconds` (0 = never) after the first load."""
        if poll_seconds > 0 and self._watcher is None:
            self._watcher = Poller(
                "model folder refresh", self.refresh, poll_seconds, self._done, logger
            )
            self._watcher.start()

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def loading_finished(self) -> bool:
        return self._done.is_set()

    # lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> LoadedModel:
        """A model by name (a taught model's newest version) or `name@version`."""
        self._follow_stamp()
        try:
            return self._lookup(name)
        except ModelNotFound:
            if not self._rescan_on_miss(name):
                raise
        return self._lookup(name)

    def _lookup(self, name: str) -> LoadedModel:
        base, version = split_ref(name)
        with self._lock:
            shipped = self._models.get(base)
            # A shipped model is also addressed by its own version (as /v2 does): santa@3.
            found = shipped if not version or (shipped and shipped.version == version) else None
            versions = self._taught.get(base, {})
            if found is None and versions:
                key = version or max(versions, key=version_key)
                found = versions.get(key)
            pending = base in self._pending
            refused = self._refused.get(name)
            # A taught name whose every version was refused (e.g. its backbone was replaced)
            # exists: "No model named 'x'" would send its owner looking for a typo.
            refused_versions = (
                []
                if version or versions or shipped
                else sorted(
                    (k for k in self._refused if k.startswith(base + VERSION_SEP)),
                    key=lambda k: version_key(split_ref(k)[1]),
                )
            )
        if found is not None:
            return found
        if pending or (not self._done.is_set() and not self._models):
            raise NotReady(f"Model {name!r} is still loading; retry in a moment.", retry_after_s=1)
        if refused is not None or refused_versions:
            raise refused_model(name, [] if refused is not None else refused_versions)
        raise missing_model(
            name,
            shipped_version=None if shipped is None else shipped.version,
            versions=versions,
            served=self.names,
        )

    def serving_name(self, loaded: LoadedModel) -> str:
        """The one name a model's requests queue under: `name` (shipped, or a taught model's
        newest version) or `name@v` (an older taught version): one queue and bound each."""
        if not loaded.taught:  # no stamp read, no sort: the predict hot path
            return loaded.name
        with self._lock:  # as of the get() just before (it followed the stamp)
            newest = max(self._taught.get(loaded.name, {}) or [loaded.version], key=version_key)
        if loaded.version != newest:
            return f"{loaded.name}{VERSION_SEP}{loaded.version}"
        return loaded.name

    def names(self) -> list[str]:
        with self._lock:
            return sorted(set(self._models) | set(self._taught))

    def serving_names(self) -> set[str]:
        """Every name requests queue and are counted under (`serving_name`)."""
        self._follow_stamp()
        with self._lock:
            keys = set(self._models) | set(self._taught)
            for name, versions in self._taught.items():
                keys.update(f"{name}{VERSION_SEP}{v}" for v in versions)
        return keys

    def versions(self, name: str) -> list[str]:
        """Served versions of a taught model, oldest first (none for shipped ones)."""
        self._follow_stamp()
        with self._lock:
            return sorted(self._taught.get(name, {}), key=version_key)

    def is_shipped(self, name: str) -> bool:
        with self._lock:
            return name in self._models

    def loaded(self) -> list[LoadedModel]:
        """Every shipped model and the newest version of every taught one, by name."""
        self._follow_stamp()
        with self._lock:
            out = dict(self._models)
            for name, versions in self._taught.items():
                if name not in out:
                    out[name] = versions[max(versions, key=version_key)]
        return [out[n] for n in sorted(out)]

    def refused(self) -> dict[str, str]:
        with self._lock:
            return dict(self._refused)

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)
