"""Catalog routes: create, list, get, delete, reindex."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.catalogs.openapi import CREATE_BODY, ERRORS
from app.api.catalogs.shaping import catalog_url, catalog_view
from app.api.deps import CatalogsDep, ReadAuth, SettingsDep, WriteAuth
from app.api.embed_gate import embed_slot
from app.api.json_bodies import read_model
from app.schemas import CatalogCreate, CatalogInfo, CatalogList, ReindexResult

router = APIRouter(prefix="/v1/catalogs", tags=["catalogs"], dependencies=[ReadAuth])


@router.post(
    "",
    status_code=201,
    response_model=CatalogInfo,
    dependencies=[WriteAuth],
    openapi_extra=CREATE_BODY,
    responses={**ERRORS, 413: {"description": "body over IMGCLASS_MAX_JSON_BYTES"}},
)
async def create_catalog(
    request: Request, service: CatalogsDep, settings: SettingsDep, response: Response
) -> CatalogInfo:
    """Create an empty catalog bound to a served model's embedding space (name, version and
    sha256 of its model.onnx are recorded). 409 if the name is taken, or when
    IMGCLASS_MAX_CATALOGS catalogs already exist (`catalog-limit`)."""
    body = await read_model(request, CatalogCreate, settings.max_json_bytes, "catalog")
    rec = await run_in_threadpool(service.create, body.name, body.model, body.description)
    response.headers["Location"] = catalog_url(rec.name)
    return catalog_view(service, rec)


@router.get("", response_model=CatalogList)
async def list_catalogs(service: CatalogsDep) -> CatalogList:
    """Every catalog with its model binding and size."""
    recs = await run_in_threadpool(service.list_catalogs)
    return CatalogList(catalogs=[catalog_view(service, r) for r in recs], store=service.store.kind)


@router.get("/{name}", response_model=CatalogInfo, responses=ERRORS)
async def get_catalog(name: str, service: CatalogsDep) -> CatalogInfo:
    """One catalog; `stale` says whether it must be reindexed before it can be searched."""
    return catalog_view(service, await run_in_threadpool(service.get, name))


@router.delete("/{name}", status_code=204, dependencies=[WriteAuth], responses=ERRORS)
async def delete_catalog(name: str, service: CatalogsDep) -> Response:
    """Delete a catalog, its items, and the images no other catalog uses."""
    await run_in_threadpool(service.delete, name)
    return Response(status_code=204)


@router.post(
    "/{name}/reindex", response_model=ReindexResult, dependencies=[WriteAuth], responses=ERRORS
)
async def reindex_catalog(
    name: str,
    request: Request,
    service: CatalogsDep,
    force: Annotated[
        bool, Query(description="re-embed even when the catalog is bound to the served build")
    ] = False,
) -> ReindexResult:
    """Re-embed every stored image with the model build now served and rebind the catalog to
    it (after a model update). Synchronous: about a second per few thousand small images.
    A catalog bound to the served build already is answered at once (`items`: 0) unless
    `force=true`; 409 while the same server process is reindexing it."""
    t0 = time.perf_counter()
    async with embed_slot(request):  # 503 at once when too many embeds are in flight
        rec, n = await run_in_threadpool(service.reindex, name, force)
    return ReindexResult(
        catalog=catalog_view(service, rec), items=n, seconds=round(time.perf_counter() - t0, 3)
    )
