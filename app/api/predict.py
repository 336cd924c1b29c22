"""Prediction endpoint: one or several images in, ranked labels out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import CatalogsDep, ReadAuth, RegistryDep, SettingsDep
from app.api.predict_shapes import predict_response
from app.api.uploads import IMAGE_BODY_OPENAPI, read_uploads
from app.batching import Schedulers
from app.classify import classify
from app.schemas import PredictResponse

router = APIRouter(prefix="/v1/models", tags=["predict"], dependencies=[ReadAuth])


def _json(body: PredictResponse) -> Response:
    # pydantic-core writes the JSON directly; returning a Response skips FastAPI's second
    # validation + jsonable_encoder pass over a model we have just built.
    return Response(body.model_dump_json(), media_type="application/json")


@router.post(
    "/{name}/predict",
    response_model=PredictResponse,
    openapi_extra=IMAGE_BODY_OPENAPI,
    responses={
        404: {"description": "unknown model"},
        413: {"description": "image or batch too large"},
        415: {"description": "not an image"},
        422: {"description": "damaged image or invalid parameters"},
        503: {"description": "model still loading, queue full or deadline passed (Retry-After)"},
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
) -> Response:
    """Classify one image (raw body) or a batch (multipart `file` parts).

    Per image: ranked predictions, what was decoded (size, format, EXIF orientation applied)
    and timings. Binary models with a calibrated threshold also return a `decision`.
    With `similar=k`, each result also lists the k most similar items of a catalog bound to
    this model (`catalog=`, else the model's default catalog), from the same forward pass.
    """
    loaded = registry.get(name)
    meta = loaded.model.bundle.metadata
    schedulers: Schedulers = request.app.state.schedulers
    scheduler = schedulers.get(name, loaded.model, meta.input)
    scheduler.admit()  # a full queue answers 503 before the body is read
    uploads = await read_uploads(request, settings)
    k = min(top_k or settings.default_top_k, meta.num_classes)
    # Decode + forward pass in one worker-thread hop (app.batching), maybe batched with others.
    scored = await scheduler.submit([u.data for u in uploads], [u.filename for u in uploads])
    filenames = [u.filename for u in uploads]
    outcome = classify(loaded, scored.images, filenames, k, output=scored.output)
    if similar is None:
        return _json(predict_response(loaded, k, outcome))
    # Neighbours from the embeddings of the same forward pass.
    found = await run_in_threadpool(catalogs.similar, loaded, catalog, outcome.embeddings, similar)
    return _json(
        predict_response(
            loaded,
            k,
            outcome,
            catalog=found.catalog.name,
            hits=found.hits,
            search_ms=found.search_ms,
        )
    )
