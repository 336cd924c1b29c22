"""GET /metrics: Prometheus text exposition (protected like the other reads)."""

from __future__ import annotations

from collections import Counter
from typing import Final, get_args

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import telemetry
from app.allocator import loaded_allocator
from app.api.deps import ReadAuth
from app.catalog.service import CatalogService
from app.procmem import server_memory
from app.registry import ModelRegistry
from app.teach.job_store import Status
from app.teach.jobs import JobRunner

router = APIRouter(tags=["operations"])
ALLOCATOR: Final = loaded_allocator()  # fixed for the process's life (chosen before it started)


def state_collector(
    registry: ModelRegistry,
    catalogs: CatalogService,
    teach: JobRunner | None,
    workers: int = 1,
) -> telemetry.StateCollector:
    def models() -> list[telemetry.ModelState]:
        return [
            telemetry.ModelState(
                name=m.name,
                version=m.model.bundle.metadata.version,
                sha256=m.model.bundle.metadata.artifact.sha256,
                provider=m.model.provider,
                load_ms=m.load_ms,
                warmup_ms=m.warmup_ms,
            )
            for m in registry.loaded()
        ]

    def catalog_sizes() -> list[telemetry.CatalogState]:
        return [
            telemetry.CatalogState(c.name, c.model.name, c.item_count)
            for c in catalogs.list_catalogs()
        ]

    def teach_jobs() -> Counter[str]:
        if teach is None:
            return Counter()
        # Every status has a series from the start (0 until a job reaches it): an alert on
        # `failed` then sees 0 -> 1, not a series that appears out of nothing.
        counts = Counter(dict.fromkeys(get_args(Status), 0))
        counts.update(job.status for job in teach.store.all())
        return counts

    return telemetry.StateCollector(
        models,
        catalog_sizes,
        lambda: len(registry.refused()),
        teach_jobs,
        lambda: server_memory(workers),
        ALLOCATOR,
    )


@router.get(
    "/metrics",
    dependencies=[ReadAuth],
    response_class=Response,
    responses={200: {"content": {telemetry.CONTENT_TYPE: {}}, "description": "metrics"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latencies (decode, queue wait, inference, total),
    in-flight requests, queue depth, batch sizes, served bundles and catalog sizes, and the
    resident memory of every server process."""
    state = request.app.state
    registry: ModelRegistry = state.registry
    collector = state_collector(
        registry, state.catalogs, getattr(state, "teach", None), state.settings.workers
    )
    body = telemetry.exposition(collector, registry.serving_names().__contains__)
    return Response(body, media_type=telemetry.CONTENT_TYPE)
