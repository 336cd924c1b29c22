"""Catalog records -> HTTP shapes. The API owns the URLs; the core never builds one."""

from __future__ import annotations

import time
from urllib.parse import quote

from app.catalog.outcomes import SearchOutcome
from app.catalog.service import CatalogService
from app.catalog.types import CatalogRecord, Hit, ItemRecord
from app.errors import ServiceError
from app.schemas import (
    CatalogInfo,
    Item,
    ModelBinding,
    Neighbor,
    SearchResponse,
    SearchTimings,
    StoredImage,
)


def catalog_url(catalog: str) -> str:
    return f"/v1/catalogs/{quote(catalog, safe='')}"


def item_url(catalog: str, item_id: str, what: str) -> str:
    return f"{catalog_url(catalog)}/items/{quote(item_id, safe='')}/{what}"


def item_view(catalog: str, it: ItemRecord) -> Item:
    return Item(
        id=it.id,
        label=it.label,
        metadata=it.metadata,
        image=StoredImage(
            sha256=it.image.sha256,
            content_type=it.image.content_type,
            width=it.image.width,
            height=it.image.height,
        ),
        created_at=it.created_at,
        image_url=item_url(catalog, it.id, "image"),
        thumbnail_url=item_url(catalog, it.id, "thumbnail"),
    )


def neighbor_view(catalog: str, hit: Hit) -> Neighbor:
    it = hit.item
    return Neighbor(
        id=it.id,
        score=round(hit.score, 6),
        label=it.label,
        metadata=it.metadata,
        thumbnail_url=item_url(catalog, it.id, "thumbnail"),
        image_url=item_url(catalog, it.id, "image"),
    )


def catalog_shape(rec: CatalogRecord, served_sha256: str | None) -> CatalogInfo:
    """`served_sha256`: the build of the catalog's model now served (None: not served)."""
    stale = None if served_sha256 is None else served_sha256 != rec.model.sha256
    m = rec.model
    return CatalogInfo(
        name=rec.name,
        description=rec.description,
        model=ModelBinding(name=m.name, version=m.version, sha256=m.sha256, embedding_dim=m.dim),
        created_at=rec.created_at,
        item_count=rec.item_count,
        index=rec.index,
        stale=stale,
    )


def catalog_view(service: CatalogService, rec: CatalogRecord) -> CatalogInfo:
    try:
        served: str | None = service.registry.get(
            rec.model.name
        ).model.bundle.metadata.artifact.sha256
    except ServiceError:
        served = None
    return catalog_shape(rec, served)


def search_view(
    out: SearchOutcome, k: int, label: str | None, item_id: str | None, t0: float
) -> SearchResponse:
    name = out.catalog.name
    return SearchResponse(
        catalog=name,
        model=out.catalog.model.name,
        k=k,
        label=label,
        query_item_id=item_id,
        neighbors=[neighbor_view(name, h) for h in out.hits[0]],
        timings=SearchTimings(
            embed_ms=round(out.embed_ms, 3),
            search_ms=round(out.search_ms, 3),
            total_ms=round((time.perf_counter() - t0) * 1e3, 3),
        ),
    )
