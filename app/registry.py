"""ModelRegistry: find bundles, verify, load, warm up; get(name) or ModelNotFound/NotReady."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.bundle import METADATA_FILE, BundleError, load_bundle
from app.errors import ModelNotFound, NotReady
from app.runtime import OnnxModel, choose_providers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: OnnxModel
    load_ms: float
    warmup_ms: float
    loaded_at: datetime

    @property
    def name(self) -> str:
        return self.model.bundle.name


class ModelRegistry:
    """Holds every servable bundle. Thread-safe: loading may run in a background thread."""

    def __init__(
        self,
        models_dir: Path,
        *,
        providers: str = "auto",
        intra_op_threads: int = 0,
        warmup_runs: int = 2,
        enabled: list[str] | None = None,
    ) -> None:
        self.models_dir = models_dir
        self._providers = choose_providers(providers)  # fails fast on an impossible setting
        self._threads = intra_op_threads
        self._warmup_runs = warmup_runs
        self._enabled = set(enabled or [])
        self._models: dict[str, LoadedModel] = {}
        self._refused: dict[str, str] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()

    def discover(self) -> list[Path]:
        if not self.models_dir.is_dir():
            logger.warning("models directory %s does not exist; serving no models", self.models_dir)
            return []
        dirs = sorted(p.parent for p in self.models_dir.glob(f"*/{METADATA_FILE}"))
        if self._enabled:
            dirs = [d for d in dirs if d.name in self._enabled]
        return dirs

    def load_all(self) -> None:
        """Load every bundle; a bad one is refused (logged, reported) and the rest are served."""
        dirs = self.discover()
        with self._lock:
            self._pending = {d.name for d in dirs}
        for directory in dirs:
            self._load_one(directory)
        self._done.set()
        logger.info(
            "model loading finished: %d served, %d refused", len(self._models), len(self._refused)
        )

    def _load_one(self, directory: Path) -> None:
        name = directory.name
        t0 = time.perf_counter()
        try:
            bundle = load_bundle(directory)
            model = OnnxModel(bundle, self._providers, self._threads)
            load_ms = (time.perf_counter() - t0) * 1e3
            warm_ms = model.warm_up(self._warmup_runs)
        except BundleError as exc:
            logger.error("refusing bundle %s: %s", name, exc)
            with self._lock:
                self._refused[name] = str(exc)
                self._pending.discard(name)
            return
        meta = bundle.metadata
        logger.info(
            "loaded bundle %s v%s sha256=%s provider=%s load=%.0fms warmup=%.0fms",
            name,
            meta.version,
            meta.artifact.sha256[:12],
            model.provider,
            load_ms,
            warm_ms,
        )
        with self._lock:
            self._models[name] = LoadedModel(model, load_ms, warm_ms, datetime.now(UTC))
            self._pending.discard(name)

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def loading_finished(self) -> bool:
        return self._done.is_set()

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            found = self._models.get(name)
            pending = name in self._pending
            refused = self._refused.get(name)
        if found is not None:
            return found
        if pending or (not self._done.is_set() and not self._models):
            raise NotReady(f"Model {name!r} is still loading; retry in a moment.", retry_after_s=1)
        if refused is not None:
            raise ModelNotFound(
                f"Model {name!r} exists but was refused at start-up; the server log says why."
            )
        raise ModelNotFound(
            f"No model named {name!r}. Available: {', '.join(self.names()) or 'none'}."
        )

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return [self._models[n] for n in sorted(self._models)]

    def refused(self) -> dict[str, str]:
        with self._lock:
            return dict(self._refused)

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)
