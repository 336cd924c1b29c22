"""Model metadata endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import CatalogsDep, ReadAuth, RegistryDep, SettingsDep, key_holder
from app.batching import Schedulers
from app.registry import LoadedModel
from app.schemas import ModelInfo, ModelList, RefusedModel, ServingPolicy

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[ReadAuth])


def model_info(
    loaded: LoadedModel, default_catalog: str | None = None, serving: ServingPolicy | None = None
) -> ModelInfo:
    bundle = loaded.model.bundle
    meta = bundle.metadata
    return ModelInfo(
        name=meta.name,
        version=meta.version,
        description=meta.description,
        task=meta.task,
        num_classes=meta.num_classes,
        labels=list(bundle.labels),
        input=meta.input,
        outputs=meta.outputs,
        metrics=meta.metrics,
        provenance=meta.provenance,
        sha256=meta.artifact.sha256,
        size_bytes=meta.artifact.bytes,
        provider=loaded.model.provider,
        loaded_at=loaded.loaded_at,
        load_ms=round(loaded.load_ms, 1),
        warmup_ms=round(loaded.warmup_ms, 1),
        default_catalog=default_catalog or (meta.backbone.catalog if meta.backbone else None),
        serving=serving,
        backbone=meta.backbone,
    )


def serving_of(request: Request, loaded: LoadedModel) -> ServingPolicy:
    schedulers: Schedulers = request.app.state.schedulers
    return ServingPolicy(**schedulers.describe(loaded.name, loaded.model))


@router.get("", response_model=ModelList)
def list_models(
    request: Request, registry: RegistryDep, catalogs: CatalogsDep, settings: SettingsDep
) -> ModelList:
    """Every served model with its labels, metrics, input spec and execution provider.
    Refused bundles are named; why (paths, reasons) only for API-key holders and in the log."""
    reasons = key_holder(request, settings)
    return ModelList(
        models=[
            model_info(m, catalogs.default_catalog(m.name), serving_of(request, m))
            for m in registry.loaded()
        ],
        refused=[
            RefusedModel(name=n, reason=r if reasons else None)
            for n, r in sorted(registry.refused().items())
        ],
        loading=registry.pending(),
    )


@router.get("/{name}", response_model=ModelInfo)
def get_model(
    name: str, request: Request, registry: RegistryDep, catalogs: CatalogsDep
) -> ModelInfo:
    """One model's public metadata and its serving policy (pipelines, queue, batching)."""
    loaded = registry.get(name)
    info = model_info(loaded, catalogs.default_catalog(name), serving_of(request, loaded))
    info.versions = registry.versions(loaded.name)
    return info
