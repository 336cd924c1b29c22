"""Prediction endpoint: one or several images in, ranked labels out.

The hot path of the service. Requests are dispatched to `predict_route`, a plain Starlette
route placed ahead of the FastAPI one (`app.main`): it skips FastAPI's dependency injection and
parameter machinery, which cost ~0.2 ms of event-loop CPU per request, a fifth of a `products`
request's HTTP work (bench/load.py, docs/performance.md). The FastAPI declaration below stays
for the OpenAPI document and calls the same handler, so both behave identically: the same key
check, the same query validation (422 problem+json from `RequestValidationError`), the same
errors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.big_answers import AnswerGate
from app.api.deps import ReadAuth, require_read_key
from app.api.disconnect import unless_gone
from app.api.name_rules import malformed, rules_of
from app.api.predict_shapes import predict_response
from app.api.query_names import DIGITS
from app.api.uploads import IMAGE_BODY_OPENAPI, read_uploads
from app.batching import Schedulers
from app.catalog.service import CatalogService
from app.classify import classify
from app.registry import ModelRegistry
from app.schemas import PredictResponse
from app.settings import Settings

PATH = "/v1/models/{name}/predict"
# PATH as a pattern, for the ASGI layers that act on predict requests before routing.
PATH_PATTERN = re.compile(r"/v1/models/([^/]+)/predict")
TOP_K = "labels per image; default 5, capped at the class count"
SIMILAR = "also return this many similar catalog items per image"
CATALOG = "catalog for `similar` (default: the model's default_catalog)"

router = APIRouter(prefix="/v1/models", tags=["predict"], dependencies=[ReadAuth])


class PredictQuery(BaseModel):
    """The query parameters, validated with the same bounds as the documented ones."""

    model_config = ConfigDict(extra="forbid")  # `?topk=1` was ignored in silence
    top_k: Annotated[int | None, Field(ge=1, le=1000), DIGITS] = None
    similar: Annotated[int | None, Field(ge=1, le=100), DIGITS] = None
    catalog: str | None = None


_NAMES = rules_of(PATH, [("path", "name"), *(("query", q) for q in PredictQuery.model_fields)])


def _json(body: PredictResponse) -> Response:
    # pydantic-core writes the JSON directly; returning a Response skips FastAPI's second
    # validation + jsonable_encoder pass over a model we have just built.
    return Response(body.model_dump_json(), media_type="application/json")


def _named(error: dict[str, Any]) -> dict[str, Any]:
    """A query error located in the query; an unknown parameter's says which ones exist."""
    out = {**error, "loc": ("query", *error["loc"])}
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(PredictQuery.model_fields))
        out["msg"] = f"not a parameter of this route; it takes {known}"
    return out


def _query(request: Request) -> PredictQuery:
    try:
        query = PredictQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError(
            [_named(e) for e in exc.errors(include_url=False)]  # type: ignore[arg-type]
        ) from None
    if query.catalog is not None and query.similar is None:  # it was ignored in silence
        msg = (
            "catalog= picks the catalog for similar=k; add similar=k (1-100) to get the k most "
            "similar items, or leave catalog= out"
        )
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "catalog"),
                    "msg": msg,
                    "input": query.catalog,
                }
            ]
        )
    return query


async def handle_predict(request: Request) -> Response:
    """Classify one image (raw body) or a batch (multipart `file` parts)."""
    state = request.app.state
    settings: Settings = state.settings
    await require_read_key(request, settings)
    bad_name = malformed(_NAMES, request.path_params, request.query_params)
    if bad_name is not None:  # as app.api.name_rules.well_formed_names answers elsewhere
        raise bad_name
    query = _query(request)
    registry: ModelRegistry = state.registry
    name: str = request.path_params["name"]
    loaded = registry.get(name)
    meta = loaded.model.bundle.metadata
    schedulers: Schedulers = state.schedulers
    scheduler = schedulers.get(registry.serving_name(loaded), loaded.model, meta.input)
    scheduler.admit()  # a full queue answers 503 before the body is read
    catalogs: CatalogService = state.catalogs
    similar_in = None  # a missing or mismatched catalog answers before any decode
    if query.similar is not None:
        similar_in = await run_in_threadpool(catalogs.similar_catalog, loaded, query.catalog)
    uploads = await read_uploads(request, settings)
    k = min(query.top_k or settings.default_top_k, meta.num_classes)
    filenames = [u.filename for u in uploads]
    # Decode + forward pass in one worker-thread hop (app.batching), maybe batched with others.
    scored = await unless_gone(request, scheduler.submit([u.data for u in uploads], filenames))
    outcome = classify(loaded, scored.images, filenames, k, output=scored.output)
    if query.similar is None or similar_in is None:
        return _json(predict_response(loaded, k, outcome))
    # Neighbours from the embeddings of the same forward pass.
    answers: AnswerGate = state.answers
    catalog, similar = similar_in, query.similar

    def build() -> bytes:
        found = catalogs.similar(loaded, catalog, outcome.embeddings, similar)
        body = predict_response(
            loaded,
            k,
            outcome,
            catalog=found.catalog.name,
            hits=found.hits,
            search_ms=found.search_ms,
        )
        return body.model_dump_json().encode()

    return await answers.respond(request, len(uploads) * similar, build)


class _HotRoute(Route):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self  # as FastAPI does: metrics and logs label by the route template
        await super().handle(scope, receive, send)


predict_route = _HotRoute(PATH, handle_predict, methods=["POST"], include_in_schema=False)


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
    top_k: Annotated[int | None, Query(ge=1, le=1000, description=TOP_K), DIGITS] = None,
    similar: Annotated[int | None, Query(ge=1, le=100, description=SIMILAR), DIGITS] = None,
    catalog: Annotated[str | None, Query(description=CATALOG)] = None,
) -> Response:
    """Classify one image (raw body) or a batch (multipart `file` parts).

    Per image: ranked predictions, what was decoded (size, format, EXIF orientation applied)
    and timings. Yes/no models (two classes with a calibrated threshold) also return a
    `decision`; two ordinary categories are ranked like any classes.
    With `similar=k`, each result also lists the k most similar items of a catalog bound to
    this model (`catalog=`, else the model's default catalog), from the same forward pass.
    """
    return await handle_predict(request)
