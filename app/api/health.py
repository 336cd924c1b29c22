"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import RegistryDep, SettingsDep
from app.schemas import Health, Readiness, RefusedModel

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive and answering (says nothing about models)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(registry: RegistryDep, settings: SettingsDep) -> JSONResponse:
    """200 once every bundle has been loaded and warmed up (refused bundles are listed);
    503 while loading, when no model could be loaded, or - with require_all_models - when
    any bundle was refused."""
    refused = registry.refused()
    names = registry.names()
    ready = registry.loading_finished and bool(names)
    if settings.require_all_models and refused:
        ready = False
    body = Readiness(
        status="ready"
        if ready
        else ("loading" if not registry.loading_finished else "unavailable"),
        models=names,
        loading=registry.pending(),
        refused=[RefusedModel(name=n, reason=r) for n, r in sorted(refused.items())],
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
