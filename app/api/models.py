"""Model metadata endpoints."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.catalogs import CatalogsDep
from app.api.deps import ReadAuth, RegistryDep
from app.registry import LoadedModel
from app.schemas import ModelInfo, ModelList, RefusedModel

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[ReadAuth])


def model_info(loaded: LoadedModel, default_catalog: str | None = None) -> ModelInfo:
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
        default_catalog=default_catalog,
    )


@router.get("", response_model=ModelList)
def list_models(registry: RegistryDep, catalogs: CatalogsDep) -> ModelList:
    """Every served model with its labels, metrics, input spec and execution provider."""
    return ModelList(
        models=[model_info(m, catalogs.default_catalog(m.name)) for m in registry.loaded()],
        refused=[RefusedModel(name=n, reason=r) for n, r in sorted(registry.refused().items())],
        loading=registry.pending(),
    )


@router.get("/{name}", response_model=ModelInfo)
def get_model(name: str, registry: RegistryDep, catalogs: CatalogsDep) -> ModelInfo:
    """One model's public metadata."""
    loaded = registry.get(name)
    return model_info(loaded, catalogs.default_catalog(name))
