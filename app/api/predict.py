"""Prediction endpoint: one or several images in, ranked labels out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app.api.catalogs import CatalogsDep
from app.api.deps import ReadAuth, RegistryDep, SettingsDep
from app.api.uploads import IMAGE_BODY_OPENAPI, Upload, read_uploads
from app.bundle import InputSpec
from app.catalog.schemas import neighbor_view
from app.classify import classify
from app.errors import ServiceError
from app.imaging import ImageLimits, PreparedImage, prepare
from app.schemas import PredictResponse
from app.settings import Settings

router = APIRouter(prefix="/v1/models", tags=["predict"], dependencies=[ReadAuth])


def limits_from(settings: Settings) -> ImageLimits:
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        min_side=settings.min_image_side,
    )


def prepare_all(uploads: list[Upload], spec: InputSpec, limits: ImageLimits) -> list[PreparedImage]:
    """Decode every upload; an error names the offending file when there are several."""
    prepared: list[PreparedImage] = []
    for i, up in enumerate(uploads):
        try:
            prepared.append(prepare(up.data, spec, limits))
        except ServiceError as exc:
            if len(uploads) > 1:
                label = f"image {i + 1}" + (f" ({up.filename!r})" if up.filename else "")
                exc.detail = f"{label}: {exc.detail}"
                exc.extra["image_index"] = i
            raise
    return prepared


@router.post(
    "/{name}/predict",
    response_model=PredictResponse,
    openapi_extra=IMAGE_BODY_OPENAPI,
    responses={
        404: {"description": "unknown model"},
        413: {"description": "image or batch too large"},
        415: {"description": "not an image"},
        422: {"description": "damaged image or invalid parameters"},
        503: {"description": "model still loading"},
    },
)
async def predict(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    catalogs: CatalogsDep,
    top_k: Annotated[
        int | None,
        Query(ge=1, le=1000, description="labels per image; default 5, capped at the class count"),
    ] = None,
    similar: Annotated[
        int | None,
        Query(ge=1, le=100, description="also return this many similar catalog items per image"),
    ] = None,
    catalog: Annotated[
        str | None,
        Query(description="catalog for `similar` (default: the model's default_catalog)"),
    ] = None,
) -> PredictResponse:
    """Classify one image (raw body) or a batch (multipart `file` parts).

    Per image: ranked predictions, what was decoded (size, format, EXIF orientation applied)
    and timings. Binary models with a calibrated threshold also return a `decision`.
    With `similar=k`, each result also lists the k most similar items of a catalog bound to
    this model (`catalog=`, else the model's default catalog), from the same forward pass.
    """
    loaded = registry.get(name)
    uploads = await read_uploads(request, settings)
    meta = loaded.model.bundle.metadata
    k = min(top_k or settings.default_top_k, meta.num_classes)
    prepared = await run_in_threadpool(prepare_all, uploads, meta.input, limits_from(settings))
    outcome = await run_in_threadpool(classify, loaded, prepared, [u.filename for u in uploads], k)
    results, timings, searched = outcome.results, outcome.timings, None
    if similar is not None:
        # Neighbours from the embeddings of the same forward pass.
        found = await run_in_threadpool(
            catalogs.similar, loaded, catalog, outcome.embeddings, similar
        )
        searched = found.catalog.name
        results = [
            r.model_copy(update={"similar": [neighbor_view(searched, h) for h in hits]})
            for r, hits in zip(results, found.hits, strict=True)
        ]
        timings = timings.model_copy(update={"search_ms": round(found.search_ms, 3)})
    return PredictResponse(
        model=meta.name,
        version=meta.version,
        provider=loaded.model.provider,
        top_k=k,
        results=results,
        timings=timings,
        catalog=searched,
    )
