"""Per-model request scheduling, the server's side: sizing from the cores and settings
(pipelines, onnxruntime threads, queue limit, deadline) and one `ModelScheduler` (app.scheduler:
the bounded queue and its worker threads) per served model, with the adaptive micro-batching
policy each model measured at warm-up capped by the operator's settings.

Hooks for metrics: every `Scored` carries its queue wait and the size of the batch that served
it; `depths()` gives the queue lengths now.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from app.bundle import InputSpec
from app.cores import cores_per_worker, cpu_count
from app.imaging import ImageLimits
from app.ingest import limits_from
from app.queued import Scored
from app.runtime import BatchPolicy
from app.scheduler import ModelScheduler, Runnable
from app.settings import Settings

__all__ = [
    "ModelScheduler",
    "Runnable",
    "SchedulerConfig",
    "Schedulers",
    "Scored",
    "cpu_count",
    "resolve_pipelines",
    "resolve_threads",
    "serving_threads",
]

logger = logging.getLogger(__name__)


def resolve_pipelines(setting: int, workers: int = 0) -> int:
    """0 = one pipeline per core of this worker's share (app.cores.cores_per_worker). On a
    quiet 2-core machine (bench/load.py, 2026-12-01 22:00 UTC) 2 pipelines beat 4 in-process in
    every cell (imagenet 640 px 201 vs 185 img/s, 12 MP 85 vs 79; products 1147 vs 1010, 188 vs
    176) and over HTTP at 8 clients (imagenet 640 px 173 vs 156 req/s); the earlier 4-pipeline
    lead was measured while other jobs loaded the cores."""
    return setting if setting > 0 else cores_per_worker(workers)


def resolve_threads(setting: int, pipelines: int, workers: int = 0) -> int:
    """onnxruntime intra-op threads per session; 0 = this worker's cores divided among its
    pipelines, so workers x pipelines x threads = cores (no oversubscription: onnxruntime's
    threads spin while they wait, so two sessions with 2 threads each on 2 cores halved
    `imagenet`'s throughput)."""
    return setting if setting > 0 else max(1, cores_per_worker(workers) // max(1, pipelines))


def serving_threads(settings: Settings) -> int:
    """The onnxruntime thread count the registry gives each session."""
    pipelines = resolve_pipelines(settings.pipelines, settings.workers)
    return resolve_threads(settings.intra_op_threads, pipelines, settings.workers)


@dataclass(frozen=True)
class SchedulerConfig:
    pipelines: int
    queue_limit: int
    deadline_s: float
    max_batch: int
    max_wait_ms: float
    limits: ImageLimits
    queue_max_wait_ms: float = 0.0  # 0: no bound on the estimated wait
    queue_max_bytes: int = 0  # 0: no bound on the bytes waiting
    workers: int = 1  # server processes, each with these pipelines and this queue
    batch_max_bytes: int = 0  # 0: no bound on a batch's encoded bytes
    pipeline_nice: int = 0  # nice levels below the event loop (app.cores)


class Schedulers:
    """One ModelScheduler per served model, made on first use and replaced when the registry
    serves a new model object under the same name (a reload or a taught model)."""

    def __init__(
        self, config: SchedulerConfig, served: Callable[[], Collection[str]] | None = None
    ) -> None:
        self.config = config
        # The names the registry serves now (ModelRegistry.serving_names): each time a new
        # scheduler is made, those of names gone since (deleted here or by another worker,
        # seen through the registry's poll) are retired, so idle ones never pile up.
        self.served = served
        self._by_name: dict[str, ModelScheduler] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, served: Callable[[], Collection[str]] | None = None
    ) -> Schedulers:
        pipelines = resolve_pipelines(settings.pipelines, settings.workers)
        return cls(
            SchedulerConfig(
                pipelines=pipelines,
                queue_limit=settings.queue_limit or 12 * cores_per_worker(settings.workers),
                deadline_s=settings.request_deadline_s,
                queue_max_wait_ms=settings.queue_max_wait_ms,
                queue_max_bytes=settings.queue_max_bytes,
                max_batch=settings.batch_max_size,
                max_wait_ms=settings.batch_max_wait_ms,
                limits=limits_from(settings),
                workers=max(1, settings.workers),
                batch_max_bytes=settings.batch_max_bytes,
                pipeline_nice=settings.pipeline_nice,
            ),
            served,
        )

    def get(self, name: str, model: Runnable, spec: InputSpec) -> ModelScheduler:
        """The scheduler serving `model` under `name`; its batch policy is the one the model
        measured at warm-up (`batch_policy`, see app.runtime), capped by the settings."""
        sched = self._by_name.get(name)
        if sched is not None and sched.model is model:
            return sched
        with self._lock:
            sched = self._by_name.get(name)
            if sched is not None and sched.model is model:
                return sched
            if sched is not None:
                sched.close()
            if self.served is not None:
                self._retire_locked(set(self.served()) | {name})
            chosen = getattr(model, "batch_policy", None)
            sched = ModelScheduler(
                name,
                model,
                spec,
                self.config.limits,
                policy=self._capped(chosen),
                pipelines=self.config.pipelines,
                queue_limit=self.config.queue_limit,
                deadline_s=self.config.deadline_s,
                max_wait_s=self.config.queue_max_wait_ms / 1e3,
                max_bytes=self.config.queue_max_bytes,
                batch_max_bytes=self.config.batch_max_bytes,
                nice=self.config.pipeline_nice,
            )
            self._by_name[name] = sched
            logger.info(
                "scheduler %s: %d pipelines, queue limit %d requests / %g ms / %d bytes, %s",
                name,
                sched.pipelines,
                sched.queue_limit,
                self.config.queue_max_wait_ms,
                self.config.queue_max_bytes,
                sched.policy.describe(),
            )
            return sched

    def _capped(self, policy: object) -> BatchPolicy:
        """The model's measured policy within the operator's max_batch / max_wait."""
        if not isinstance(policy, BatchPolicy) or self.config.max_batch <= 1:
            reason = policy.reason if isinstance(policy, BatchPolicy) else "not measured"
            if self.config.max_batch <= 1:
                reason = "batching off (max_batch=1)"
            return BatchPolicy(max_batch=1, max_wait_ms=0.0, reason=reason)
        size = min(policy.max_batch, self.config.max_batch)
        wait = min(policy.max_wait_ms, self.config.max_wait_ms) if size > 1 else 0.0
        return BatchPolicy(size, wait, policy.reason, policy.measured)

    def retire(self, served: Collection[str]) -> list[str]:
        """Close the schedulers (their pipeline threads, their hold on the model) of names no
        longer served, e.g. a deleted taught model; requests still queued there get 404.
        Without this every deleted name kept two idle threads for the life of the process
        (bench/soak.py measured it). Returns the names retired."""
        with self._lock:
            return self._retire_locked(served)

    def _retire_locked(self, served: Collection[str]) -> list[str]:
        gone = [name for name in self._by_name if name not in served]
        for name in gone:
            self._by_name.pop(name).close(gone=True)
        if gone:
            logger.info("schedulers retired (no longer served): %s", ", ".join(sorted(gone)))
        return gone

    def peek(self, name: str) -> ModelScheduler | None:
        """The scheduler serving `name`, if a request has reached it yet (never creates one)."""
        return self._by_name.get(name)

    def describe(self, name: str, model: object) -> dict[str, Any]:
        """The serving policy of a model (whether or not a request has reached it yet)."""
        sched = self._by_name.get(name)
        live = sched is not None and sched.model is model
        policy = (
            sched.policy
            if sched is not None and live
            else self._capped(getattr(model, "batch_policy", None))
        )
        return {
            "workers": self.config.workers,
            "pipelines": self.config.pipelines,
            "intra_op_threads": int(getattr(model, "intra_op_threads", 0)),
            "pipeline_nice": self.config.pipeline_nice,
            "queue_limit": self.config.queue_limit,
            "queue_max_wait_ms": self.config.queue_max_wait_ms,
            "queue_max_bytes": self.config.queue_max_bytes,
            "queue_depth": sched.depth if sched is not None and live else 0,
            "queue_wait_estimate_ms": round(sched.drain_s() * 1e3, 2)
            if sched is not None and live
            else 0.0,
            "ms_per_image": round(sched.image_s * 1e3, 3) if sched is not None and live else None,
            "deadline_s": self.config.deadline_s,
            "max_batch": policy.max_batch,
            "max_wait_ms": policy.max_wait_ms,
            "batch_max_bytes": self.config.batch_max_bytes,
            "reason": policy.reason,
            "measured": [list(row) for row in policy.measured],
        }

    def depths(self) -> dict[str, int]:
        """Requests waiting per model now (a metrics hook)."""
        return {n: s.depth for n, s in list(self._by_name.items())}

    def close(self) -> None:
        with self._lock:
            for sched in self._by_name.values():
                sched.close()
            self._by_name.clear()
