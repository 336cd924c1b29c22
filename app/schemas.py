"""Pydantic request/response shapes of the HTTP API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.bundle import InputSpec, Metrics, Outputs, Provenance
from app.catalog.schemas import Neighbor


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


class RefusedModel(BaseModel):
    name: str
    reason: str


class ModelList(BaseModel):
    models: list[ModelInfo]
    refused: list[RefusedModel]
    loading: list[str]


class Prediction(BaseModel):
    label: str
    index: int
    score: float


class Decision(BaseModel):
    """Verdict of a binary model at its calibrated threshold."""

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
