"""Pydantic request/response shapes of the HTTP API (the core returns plain objects; app/api
shapes them into these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from app.bundle import BackboneRef, InputSpec, Metrics, Outputs, Provenance
from app.catalog.names import CATALOG_NAME_RE
from app.text_fields import CatalogDescription

# catalogs -----------------------------------------------------------------------------------
MAX_K = 100


class CatalogCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The pattern is documented, not validated here: the service checks it with a plain
    # message (pydantic's names the raw regex).
    name: str = Field(
        description="1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit",
        examples=["shoes"],
        json_schema_extra={"pattern": CATALOG_NAME_RE.pattern},
    )
    model: str = Field(description="served model whose embedding space the catalog uses")
    description: CatalogDescription = ""


class ModelBinding(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="sha256 of the model.onnx the catalog's vectors came from")
    embedding_dim: int


class CatalogInfo(BaseModel):
    name: str
    description: str
    model: ModelBinding
    created_at: datetime
    item_count: int
    index: str = Field(description="how the vectors are indexed (backend detail)")
    stale: bool | None = Field(
        description="true when the served model is not the build the catalog was made with "
        "(searches answer 409 until POST .../reindex); null when the model is not served"
    )


class CatalogList(BaseModel):
    catalogs: list[CatalogInfo]
    store: str = Field(description="the vector store backend: embedded or milvus")


class StoredImage(BaseModel):
    sha256: str
    content_type: str
    width: int = Field(description="as shown: the file's EXIF orientation applied")
    height: int = Field(description="as shown: the file's EXIF orientation applied")


class Item(BaseModel):
    id: str
    label: str | None
    metadata: dict[str, Any]
    image: StoredImage
    created_at: datetime
    image_url: str
    thumbnail_url: str


class ItemList(BaseModel):
    items: list[Item]
    total: int = Field(description="items in the catalog (with the label, when filtered)")
    next_after: str | None = Field(description="pass as ?after= for the next page; null at the end")


class SkippedCopy(BaseModel):
    """An image not added by `skip_duplicates=true`: a copy of an item with the same label."""

    index: int = Field(description="the image's position in the request, from 0")
    filename: str | None = Field(description="its file name, when the request gave one")
    label: str | None
    duplicate_of: str = Field(
        description="id of the item it copies: already in the catalog, or added by this request"
    )
    score: float = Field(description="cosine similarity of the two embeddings (>= 0.99999)")


class ItemWarning(BaseModel):
    """An image added, but of little use as a neighbour."""

    index: int = Field(description="the image's position in the request, from 0")
    filename: str | None = Field(description="its file name, when the request gave one")
    id: str = Field(description="the item's id")
    warning: str


class ItemsCreated(BaseModel):
    catalog: str
    ids: list[str] = Field(description="ids of the items added, in request order")
    items: list[Item]
    added: int = Field(description="items added")
    duplicates_skipped: int = Field(default=0, description="copies left out (skip_duplicates)")
    duplicates: list[SkippedCopy] = Field(
        default_factory=list, description="with skip_duplicates=true: each copy left out"
    )
    warnings: list[ItemWarning] = Field(
        default_factory=list,
        description="images added that are of little use, each with why (a blank picture: one "
        "flat colour as the model sees it, which predict flags as `image.blank`)",
    )


class SearchRequest(BaseModel):
    """JSON body of a search by stored item or by a vector from the same model."""

    model_config = ConfigDict(extra="forbid")

    item_id: str | None = Field(default=None, description="search with this item's vector")
    vector: list[float] | None = Field(
        default=None, description="an embedding of the catalog's model (normalised here)"
    )
    k: int | None = Field(default=None, ge=1, le=MAX_K)
    label: str | None = Field(default=None, description="only neighbours with this label")

    @field_validator("vector", mode="before")
    @classmethod
    def _numbers_only(cls, value: Any) -> Any:
        """One error for a vector holding anything but numbers, not one per element: 85,000
        of them (a 256 KiB body of `[]`s) held the event loop 0.9 s to list (round 31)."""
        if isinstance(value, list):
            for i, x in enumerate(value):
                if isinstance(x, bool) or not isinstance(x, int | float):
                    kind = _JSON_KINDS.get(type(x), type(x).__name__)
                    raise PydanticCustomError(
                        "vector_numbers",
                        "element {index} is {kind}; a vector holds numbers only",
                        {"index": i, "kind": kind},
                    )
        return value


_JSON_KINDS = {list: "an array", dict: "an object", str: "a string", bool: "a boolean"}
_JSON_KINDS[type(None)] = "null"


class Neighbor(BaseModel):
    id: str
    score: float = Field(description="cosine similarity of the L2-normalised embeddings")
    label: str | None
    metadata: dict[str, Any]
    thumbnail_url: str
    image_url: str


class SearchTimings(BaseModel):
    embed_ms: float = Field(description="decode + forward pass of the query image (0 otherwise)")
    search_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    catalog: str
    model: str
    k: int
    label: str | None
    query_item_id: str | None = Field(description="the item searched with; never a neighbour")
    neighbors: list[Neighbor]
    timings: SearchTimings


class ReindexResult(BaseModel):
    catalog: CatalogInfo
    items: int = Field(description="items re-embedded: 0 when the catalog was current already")
    seconds: float


# models and predictions ---------------------------------------------------------------------
class ServingPolicy(BaseModel):
    """How requests for a model are scheduled (app.batching); the batch size is measured at
    warm-up on this machine's provider and kept only where it was faster per image."""

    workers: int = Field(
        default=1,
        description="server processes; each has the pipelines, queue and limits below",
    )
    pipelines: int = Field(description="threads per process: decode + forward pass in one hop")
    intra_op_threads: int = Field(description="onnxruntime threads per forward pass")
    pipeline_nice: int = Field(
        default=0,
        description="nice levels the pipelines run below the event loop (Linux; 0 = same)",
    )
    queue_limit: int = Field(
        description="requests that may wait (hard cap; those a worker took in a batch count "
        "too, beyond one per worker); beyond: 503"
    )
    queue_max_wait_ms: float = Field(
        description="a request is refused (503 + Retry-After) when the work already waiting "
        "would take longer than this to start (0 = no bound)"
    )
    queue_max_bytes: int = Field(description="bytes of request bodies that may wait (0 = no cap)")
    queue_depth: int = Field(description="requests waiting now")
    queue_wait_estimate_ms: float = Field(
        description="estimated wait for a request arriving now (queued images x ms_per_image / "
        "pipelines)"
    )
    ms_per_image: float | None = Field(
        default=None,
        description="recent decode + forward time of one image on one pipeline (None before "
        "the first request)",
    )
    deadline_s: float
    max_batch: int = Field(description="images one forward pass may gather from requests")
    max_wait_ms: float = Field(
        description="how long a worker waits to fill a batch (0: it takes only requests already queued)"
    )
    batch_max_bytes: int = Field(
        default=0,
        description="a batch takes more requests only while their encoded images total at most "
        "this many bytes (0 = no cap)",
    )
    reason: str
    measured: list[tuple[int, float]] = Field(
        description="(batch size, ms per image) measured at warm-up"
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    description: str
    task: str
    num_classes: int
    labels: list[str]
    input: InputSpec
    outputs: Outputs
    metrics: list[Metrics]
    provenance: Provenance
    sha256: str
    size_bytes: int
    provider: str = Field(description="onnxruntime execution provider actually in use")
    loaded_at: datetime
    load_ms: float
    warmup_ms: float
    default_catalog: str | None = Field(
        default=None, description="catalog predict?similar=k searches when none is named"
    )
    serving: ServingPolicy | None = None
    backbone: BackboneRef | None = Field(
        default=None,
        description="taught models: the served backbone its head runs on and its source catalog",
    )
    versions: list[str] = Field(
        default_factory=list,
        description="taught models: every served version, oldest first (address one as name@version)",
    )


class RefusedModel(BaseModel):
    name: str
    reason: str | None = Field(
        default=None, description="why it was refused: shown to API-key holders only"
    )


class ModelList(BaseModel):
    models: list[ModelInfo]
    refused: list[RefusedModel]
    loading: list[str]


class Prediction(BaseModel):
    label: str
    index: int
    score: float


class Decision(BaseModel):
    """Verdict of a yes/no model at its calibrated threshold: only for a two-class model whose
    metrics record a threshold and positive_label (a taught model: positive_label asked for,
    or the other label named like "not X"/"other"). Other models, two ordinary categories
    included, answer with ranked predictions only and `decision` null."""

    label: str
    positive_label: str
    positive_score: float
    threshold: float
    is_positive: bool


class ImageMeta(BaseModel):
    format: str
    width: int
    height: int
    mode: str = Field(description="Pillow mode of the decoded file (before conversion)")
    orientation: int = Field(description="EXIF orientation applied (1 = none)")
    frames: int = Field(description="frames in the file; only the first is classified")
    decoded_width: int
    decoded_height: int
    inverted: bool = Field(
        default=False,
        description="gray levels were inverted before classifying (the model's input.invert: "
        "always, or 'auto' for a dark object on a light background)",
    )
    blank: bool = Field(
        default=False,
        description="the picture is one colour as the model sees it (after trimming, framing "
        "and painting): there is nothing in it to classify, so its predictions say only what "
        "the model makes of an empty picture",
    )
    exif: Literal["none", "applied", "unreadable", "invalid"] = Field(
        default="none",
        description="EXIF orientation outcome: none (no tag), applied, unreadable (EXIF could "
        "not be parsed: not rotated) or invalid (tag not 1-8: not rotated)",
    )
    frames_capped: bool = Field(
        default=False, description="the file has more frames than `frames` (counting stops early)"
    )


class ImageTimings(BaseModel):
    decode_ms: float
    preprocess_ms: float
    inference_ms: float = Field(description="share of the batch's inference time")
    total_ms: float


class ImageResult(BaseModel):
    filename: str | None
    predictions: list[Prediction]
    decision: Decision | None = None
    image: ImageMeta
    timings: ImageTimings
    similar: list[Neighbor] | None = Field(
        default=None, description="nearest catalog items (predict?similar=k), best first"
    )
    familiar: bool | None = Field(
        default=None,
        description="a taught model's answer with similar=k from the catalog it was taught "
        "from: false when none of the k neighbours labelled with one of its classes is as "
        "alike as 99% of the examples are to their own nearest other example (the model's "
        "metrics.extra.familiar_min_similarity): the model was taught nothing like it and its "
        "labels are a guess. null otherwise",
    )


class BatchTimings(BaseModel):
    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    total_ms: float
    search_ms: float | None = Field(default=None, description="similarity search (similar=k)")


class PredictResponse(BaseModel):
    model: str
    version: str
    provider: str
    top_k: int
    results: list[ImageResult]
    timings: BatchTimings
    catalog: str | None = Field(default=None, description="catalog searched for `similar`")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: list[str]
    loading: list[str]
    refused: list[RefusedModel]
    storage: str = Field(
        "ok",
        description="'ok'; 'full' or 'read-only' when the data folder (catalogs, taught "
        "models, jobs) cannot take writes (the server stays ready: predictions work, writes "
        "answer 507/503); 'unavailable' when it was removed or replaced under the running "
        "server",
    )
    catalog_store: str = Field(
        "open",
        description="'opening' while the catalog store is opened and stored images no item "
        "uses are looked for (status 'loading'); 'open'; 'unavailable' when it could not be "
        "opened (the server stays ready: predictions work, catalogs answer 503 and retry)",
    )
    detail: str | None = Field(
        None,
        description="with status 'unavailable': why no model is served (no models folder, "
        "no bundle in it, every bundle refused, or one refused with require_all_models)",
    )
