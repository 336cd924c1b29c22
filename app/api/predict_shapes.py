"""Classification outcomes (app.classify) -> the predict endpoint's HTTP shapes."""

from __future__ import annotations

from dataclasses import dataclass

from app.api.catalogs.shaping import neighbor_view
from app.catalog.types import Hit
from app.classify import BatchOutcome, Classified
from app.registry import LoadedModel
from app.schemas import (
    BatchTimings,
    Decision,
    ImageMeta,
    ImageResult,
    ImageTimings,
    Prediction,
    PredictResponse,
)
from app.teach.familiar import FLOOR_KEY


def _ms(x: float) -> float:
    return round(x, 3)


@dataclass(frozen=True)
class Familiarity:
    """What a taught model's `familiar` compares: its floor, and the labels it was taught
    (items of its catalog labelled otherwise, added since, are not what it knows)."""

    floor: float
    labels: frozenset[str]

    def familiar(self, similar: list[Hit] | None) -> bool | None:
        """False when no neighbour of a taught label is at least as alike as the floor (the k
        nearest all carrying other labels counts: the model knows none of them)."""
        if not similar:
            return None
        return any(h.item.label in self.labels and h.score >= self.floor for h in similar)


def familiarity(loaded: LoadedModel, catalog: str | None) -> Familiarity | None:
    """A taught model's, when `catalog` is the one it was taught from (its neighbours there
    are what the floor was measured on)."""
    meta = loaded.model.bundle.metadata
    if meta.backbone is None or catalog is None or catalog != meta.backbone.catalog:
        return None
    for m in meta.metrics:
        if FLOOR_KEY in m.extra:
            return Familiarity(m.extra[FLOOR_KEY], frozenset(loaded.model.bundle.labels))
    return None


def image_result(
    r: Classified,
    similar: list[Hit] | None,
    catalog: str | None,
    known: Familiarity | None = None,
) -> ImageResult:
    return ImageResult(
        filename=r.filename,
        predictions=[Prediction.model_validate(p, from_attributes=True) for p in r.predictions],
        decision=Decision.model_validate(r.decision, from_attributes=True) if r.decision else None,
        image=ImageMeta.model_validate(r.info, from_attributes=True),
        timings=ImageTimings(
            decode_ms=_ms(r.decode_ms),
            preprocess_ms=_ms(r.preprocess_ms),
            inference_ms=_ms(r.inference_ms),
            total_ms=_ms(r.decode_ms + r.preprocess_ms + r.inference_ms),
        ),
        similar=None
        if similar is None or catalog is None
        else [neighbor_view(catalog, h) for h in similar],
        familiar=None if known is None else known.familiar(similar),
    )


def predict_response(
    loaded: LoadedModel,
    top_k: int,
    outcome: BatchOutcome,
    *,
    catalog: str | None = None,
    hits: list[list[Hit]] | None = None,
    search_ms: float | None = None,
) -> PredictResponse:
    """The response of POST /v1/models/{name}/predict (with `similar` neighbours when
    `catalog` and `hits` are given)."""
    meta = loaded.model.bundle.metadata
    per_image = hits if hits is not None else [None] * len(outcome.results)
    known = familiarity(loaded, catalog)
    return PredictResponse(
        model=meta.name,
        version=meta.version,
        provider=loaded.model.provider,
        top_k=top_k,
        results=[
            image_result(r, h, catalog, known)
            for r, h in zip(outcome.results, per_image, strict=True)
        ],
        timings=BatchTimings(
            decode_ms=_ms(outcome.decode_ms),
            preprocess_ms=_ms(outcome.preprocess_ms),
            inference_ms=_ms(outcome.inference_ms),
            total_ms=_ms(outcome.total_ms),
            search_ms=None if search_ms is None else _ms(search_ms),
        ),
        catalog=catalog,
    )
