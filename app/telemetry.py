"""Prometheus metrics: definitions, recording helpers and the /metrics exposition.

Process-wide counters and histograms live here (prometheus-client). With several uvicorn
workers, `python -m app` sets PROMETHEUS_MULTIPROC_DIR (app.multiproc) before any worker starts, every worker
writes its samples to files there and a scrape of any worker aggregates all of them.
State the app already holds (bundles served, catalog sizes) is read at scrape time by
`StateCollector` instead of being copied into gauges. No FastAPI here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app import metric_files
from app.multiproc import multiprocess_dir
from app.procmem import ProcessMemory

metric_files.install()  # before the first metric opens its file

logger = logging.getLogger(__name__)

# The classic text format 0.0.4: what Prometheus 2.x servers (Debian 12 ships 2.42) parse.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

# Seconds. Decode of a 640 px JPEG is ~2.5 ms and of a 12 MP one ~16 ms here; a forward pass
# of the imagenet model ~4 ms (batch 1) to ~70 ms (batch 16) on two cores: the buckets span
# 0.5 ms to 10 s so both a tiny model and a queue under load fall inside them.
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter(
    "imgclass_requests",
    "HTTP requests answered, by route template, method, model and status code.",
    ["route", "method", "model", "status"],
)
REQUEST_SECONDS = Histogram(
    "imgclass_request_duration_seconds",
    "Time from the first byte of a request to the end of its response, by route and model.",
    ["route", "model"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "imgclass_requests_in_flight",
    "Requests being served right now, by model ('' for routes that name none).",
    ["model"],
    multiprocess_mode="livesum",
)
DECODE_SECONDS = Histogram(
    "imgclass_decode_seconds",
    "Per image: decode, orientation and resize to the model input (the ingestion policy).",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "imgclass_queue_wait_seconds",
    "Per request: time waiting in the model's queue before a pipeline took it.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "imgclass_inference_seconds",
    "Per forward pass: onnxruntime session.run of one batch.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "imgclass_batch_size",
    "Images per forward pass.",
    ["model"],
    buckets=BATCH_BUCKETS,
)
IMAGES = Counter("imgclass_images", "Images scored, by model.", ["model"])
QUEUE_DEPTH = Gauge(
    "imgclass_queue_depth",
    "Requests waiting in the model's queue right now (summed over workers).",
    ["model"],
    multiprocess_mode="livesum",
)
TEACH_JOBS_ENDED = Counter(
    "imgclass_teach_jobs_ended",
    "Teach jobs that ended, by status (succeeded, failed, cancelled): a count that only grows, "
    "where imgclass_teach_jobs (job files kept) drops when old jobs are pruned.",
    ["status"],
)
for _ended in ("succeeded", "failed", "cancelled"):
    TEACH_JOBS_ENDED.labels(_ended)  # exported from the start, at 0: alerts see the series
GRPC_WATCHES = Gauge(
    "imgclass_grpc_health_watches",
    "gRPC health watches open right now (summed over workers; 16 per process at most).",
    multiprocess_mode="livesum",
)
# -- recording helpers (cheap; safe from any thread) -------------------------------------


# Each update goes through metric_files.update: one metric each, so one whose file cannot be
# opened or grown (no file descriptor free) waits without the others being applied twice.
update = metric_files.update


def observe_request(route: str, method: str, model: str, status: int, seconds: float) -> None:
    update(lambda: REQUESTS.labels(route, method, model, str(status)).inc())
    update(lambda: REQUEST_SECONDS.labels(route, model).observe(seconds))


def in_flight(model: str, change: int) -> None:
    """A request of `model` ('' for none) starts (+1) or ends (-1)."""
    update(lambda: IN_FLIGHT.labels(model).inc(change))


def _observation(hist: Histogram, model: str, seconds: float) -> Callable[[], None]:
    return lambda: hist.labels(model).observe(seconds)


def observe_decode(model: str, ms_per_image: Iterable[float]) -> None:
    for ms in ms_per_image:
        update(_observation(DECODE_SECONDS, model, ms / 1e3))


def observe_inference(model: str, ms: float, batch_size: int) -> None:
    """One forward pass of `batch_size` images."""
    update(lambda: INFERENCE_SECONDS.labels(model).observe(ms / 1e3))
    update(lambda: BATCH_SIZE.labels(model).observe(batch_size))
    update(lambda: IMAGES.labels(model).inc(batch_size))


def observe_batch(
    model: str,
    decode_ms: Iterable[float],
    queue_wait_ms: Iterable[float],
    inference_ms: float,
    batch_size: int,
) -> None:
    """One served batch (app.batching): decode per image, queue wait per request, the pass."""
    observe_decode(model, decode_ms)
    for ms in queue_wait_ms:
        update(_observation(QUEUE_WAIT_SECONDS, model, ms / 1e3))
    observe_inference(model, inference_ms, batch_size)


def set_queue_depth(model: str, depth: int) -> None:
    update(lambda: QUEUE_DEPTH.labels(model).set(depth))


# -- state read at scrape time ------------------------------------------------------------


@dataclass(frozen=True)
class ModelState:
    """What the collector needs to know about one served bundle."""

    name: str
    version: str
    sha256: str
    provider: str
    load_ms: float
    warmup_ms: float


@dataclass(frozen=True)
class CatalogState:
    name: str
    model: str
    items: int


class StateCollector(Collector):
    """Reads the app's own state on each scrape: served bundles, catalog sizes, teach jobs
    (job files are shared by all workers, so every worker counts them all)."""

    def __init__(
        self,
        models: Callable[[], Sequence[ModelState]],
        catalogs: Callable[[], Sequence[CatalogState]],
        refused: Callable[[], int],
        teach_jobs: Callable[[], Mapping[str, int]] = dict,
        memory: Callable[[], Sequence[ProcessMemory]] = list,
        allocator: str = "",
    ) -> None:
        self._models = models
        self._catalogs = catalogs
        self._refused = refused
        self._teach_jobs = teach_jobs
        self._memory = memory
        self._allocator = allocator

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "imgclass_model_info",
            "Served bundles (value 1): name, version, model.onnx sha256, execution provider.",
            labels=["model", "version", "sha256", "provider"],
        )
        load = GaugeMetricFamily(
            "imgclass_model_load_seconds",
            "Time to verify and load the bundle into onnxruntime (this worker).",
            labels=["model"],
        )
        warm = GaugeMetricFamily(
            "imgclass_model_warmup_seconds",
            "Time of the warm-up runs after loading (this worker).",
            labels=["model"],
        )
        for m in self._models():
            info.add_metric([m.name, m.version, m.sha256, m.provider], 1.0)
            load.add_metric([m.name], m.load_ms / 1e3)
            warm.add_metric([m.name], m.warmup_ms / 1e3)
        yield from (info, load, warm)
        yield GaugeMetricFamily(
            "imgclass_models_refused",
            "Bundles refused at start-up (the log says why).",
            value=float(self._refused()),
        )
        items = GaugeMetricFamily(
            "imgclass_catalog_items",
            "Items in each similarity catalog.",
            labels=["catalog", "model"],
        )
        try:
            catalogs = list(self._catalogs())
        except Exception as exc:  # a store that cannot answer must not break the scrape
            logger.warning("catalog sizes unavailable for /metrics: %s", exc)
            catalogs = []
        for c in catalogs:
            items.add_metric([c.name, c.model], float(c.items))
        yield items
        jobs = GaugeMetricFamily(
            "imgclass_teach_jobs",
            "Taught-model jobs by status (queued, running, succeeded, failed, cancelled ...).",
            labels=["status"],
        )
        try:
            counts = dict(self._teach_jobs())
        except Exception as exc:  # the job folder must not break the scrape either
            logger.warning("teach job counts unavailable for /metrics: %s", exc)
            counts = {}
        for status, n in sorted(counts.items()):
            jobs.add_metric([status], float(n))
        yield jobs
        rss = GaugeMetricFamily(
            "imgclass_process_resident_memory_bytes",
            "Resident memory of each server process, read at scrape time (role: server, or "
            "supervisor and worker when python -m app runs several workers).",
            labels=["pid", "role"],
        )
        for p in self._memory():
            rss.add_metric([str(p.pid), p.role], float(p.rss_bytes))
        yield rss
        if self._allocator:
            alloc = GaugeMetricFamily(
                "imgclass_allocator_info",
                "The C allocator the server runs on (value 1): jemalloc or glibc "
                "(IMGCLASS_ALLOCATOR, app/allocator.py).",
                labels=["allocator"],
            )
            alloc.add_metric([self._allocator], 1.0)
            yield alloc


def process_stopped() -> None:
    """At a worker's shutdown: drop its live gauges (in-flight, queue depth) from the shared
    multiprocess files, so a restarted worker's old values are not summed in."""
    if multiprocess_dir() is not None:
        metric_files.flush()  # counts still waiting for a descriptor, if one is free now
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _ServedOnly(Collector):
    """`source`'s metrics without the samples of models no longer served: a deleted taught
    model's series leave /metrics at once (the multiprocess files cannot drop a label set,
    and a process keeps them until it restarts). Samples without a model ('') stay."""

    def __init__(self, source: CollectorRegistry, served: Callable[[str], bool]) -> None:
        self.source = source
        self.served = served

    def collect(self) -> Iterator[Metric]:
        for metric in self.source.collect():  # fresh Metric objects on every collect
            metric.samples = [
                s
                for s in metric.samples
                if not s.labels.get("model") or self.served(s.labels["model"])
            ]
            yield metric


def exposition(state: Collector, served: Callable[[str], bool] | None = None) -> bytes:
    """The /metrics body: process metrics (all workers in multiprocess mode) + app state;
    `served`: which `model` label values are still served (default: all)."""
    metric_files.flush()
    folder = multiprocess_dir()
    if folder is not None:
        source = CollectorRegistry()
        source.register(metric_files.FolderCollector(folder))
    else:
        source = REGISTRY
    if served is not None:
        filtered = CollectorRegistry(auto_describe=False)
        filtered.register(_ServedOnly(source, served))
        source = filtered
    head = generate_latest(source)
    app_registry = CollectorRegistry(auto_describe=False)
    app_registry.register(state)
    return head + generate_latest(app_registry)
