"""The model-bundle contract: metadata schema, reading/verifying and writing of bundles.

Pure module (pydantic + hashlib only): the server reads bundles with it, `training/` writes them.
A bundle is a folder ``<name>/`` holding ``model.onnx``, ``metadata.json`` and ``labels.txt``.
How each file is read without trusting it is app.bundle_files; the graph's names and shapes are
checked by app.bundle_io.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.bundle_files import inside, no_duplicate_keys, read_labels, read_text, sha256_file
from app.bundle_io import BundleError as BundleError
from app.bundle_io import TensorInfo as TensorInfo
from app.bundle_io import check_io as check_io

SCHEMA_VERSION = 1
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.txt"
CARD_FILE = "README.md"

INPUT_NAME = "image"
PROBS_NAME = "probs"
EMBEDDING_NAME = "embedding"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Bundle files are plain names in its folder ("../x", "/etc/x" would read other files).
_FILE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
MAX_METADATA_BYTES = 1 << 20
# (x - mean) / std in float32: a smaller std turns ordinary pixels into inf.
MIN_STD = 1e-6


class _Strict(BaseModel):
    # No NaN/inf anywhere (JSON readers accept them; a NaN std made every prediction NaN).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Normalization(_Strict):
    """How pixel values are normalised after scaling to `pixel_range`.

    `in_graph=True` means the ONNX graph does it itself; otherwise the server applies
    ``(x - mean) / std`` per channel.
    """

    in_graph: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if self.in_graph and (self.mean is not None or self.std is not None):
            raise ValueError("mean/std must be omitted when normalization is in the graph")
        if not self.in_graph:
            if self.mean is None or self.std is None:
                raise ValueError("mean and std are required when normalization is not in the graph")
            if len(self.mean) != len(self.std):
                raise ValueError("mean and std must have the same length")
            if any(s < MIN_STD for s in self.std):
                raise ValueError(f"std values must be at least {MIN_STD:g}")
        return self


class ResizeSpec(_Strict):
    """How an arbitrary image is brought to the model's height x width."""

    mode: Literal["stretch", "center_crop", "letterbox"] = "stretch"
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "box"] = "bilinear"
    # Fill value (0-255, applied to every channel) for letterbox padding.
    pad_value: int = Field(default=0, ge=0, le=255)


class InputSpec(_Strict):
    name: str = INPUT_NAME
    layout: Literal["NHWC"] = "NHWC"
    height: int = Field(ge=1, le=4096)
    width: int = Field(ge=1, le=4096)
    channels: Literal[1, 3]
    color: Literal["rgb", "gray"]
    resize: ResizeSpec = ResizeSpec()
    # Pixels (0..255 after decoding) are mapped linearly onto this range before normalization.
    pixel_range: tuple[float, float] = (0.0, 255.0)
    normalization: Normalization = Normalization()
    dtype: Literal["float32"] = "float32"
    # Invert gray levels after decoding, before resizing: True always (a model trained on
    # dark-on-light images); "auto" (gray models trained light-on-dark, like MNIST and
    # Fashion-MNIST) only images whose border is light, i.e. a dark object on a light
    # background such as ink on paper or a product shot on white.
    invert: bool | Literal["auto"] = False
    # Trim to the object on a uniform background and centre it in a square before resizing
    # (app/trim.py), as Fashion-MNIST's pictures were made. Off unless the bundle asks.
    trim: bool = False
    # Drawings on a uniform background whose object is small in the centre crop, or partly
    # outside it, are re-framed so the object spans this share of the model's view (app/trim.py
    # frame_object), the framing a model trained on emoji art saw. None: off.
    frame: float | None = Field(default=None, ge=0.5, le=1.0)
    # "white": the training pictures were on white. A uniform background of another colour
    # touching the border is painted white at model size (app/trim.py whiten_background), or
    # black for a model that inverts (invert True or "auto"), whose white paper became black.
    # For a model that does not invert, light ink on a dark background (chalk, white lines on
    # black) is first drawn as dark ink on white (app/trim.py light_ink).
    background: Literal["as_is", "white"] = "as_is"

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if (self.color == "gray") != (self.channels == 1):
            raise ValueError("color 'gray' goes with channels=1 and 'rgb' with channels=3")
        if self.invert == "auto" and self.color != "gray":
            raise ValueError("invert 'auto' is for gray models (light objects on dark)")
        norm = self.normalization
        if norm.mean is not None and len(norm.mean) != self.channels:
            raise ValueError("normalization mean/std need one value per channel")
        if self.frame is not None and (self.trim or self.resize.mode != "center_crop"):
            raise ValueError("frame is for center_crop models that do not trim")
        lo, hi = self.pixel_range
        if not lo < hi:
            raise ValueError("pixel_range must be (low, high) with low < high")
        return self


class ProbsOutput(_Strict):
    name: str = PROBS_NAME
    kind: Literal["softmax", "sigmoid"] = "softmax"


class EmbeddingOutput(_Strict):
    name: str = EMBEDDING_NAME
    dim: int = Field(ge=1)
    l2_normalized: bool = False


class Outputs(_Strict):
    probs: ProbsOutput = ProbsOutput()
    embedding: EmbeddingOutput | None = None


class Metrics(_Strict):
    """One evaluation: every number names its data set, split and sample size."""

    dataset: str
    split: str
    n_samples: int = Field(ge=1)
    accuracy: float | None = Field(default=None, ge=0, le=1)
    top5_accuracy: float | None = Field(default=None, ge=0, le=1)
    precision: float | None = Field(default=None, ge=0, le=1)
    recall: float | None = Field(default=None, ge=0, le=1)
    f1: float | None = Field(default=None, ge=0, le=1)
    # Decision threshold on the positive class for binary models.
    threshold: float | None = Field(default=None, ge=0, le=1)
    positive_label: str | None = None
    # "numpy": a taught head scored in numpy on held-out embeddings (same weights as the graph).
    evaluated_with: Literal["keras", "onnxruntime", "numpy"] = "onnxruntime"
    notes: str | None = None
    extra: dict[str, float] = Field(default_factory=dict)


class Provenance(_Strict):
    data_source: str
    data_version: str | None = None
    architecture: str
    pretrained_weights: str | None = None
    weights_license: str | None = None
    epochs: int | None = Field(default=None, ge=0)
    seed: int | None = None
    training_time_s: float | None = Field(default=None, ge=0)
    hardware: str | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    opset: int
    notes: str | None = None


class Artifact(_Strict):
    file: str = Field(default=MODEL_FILE, pattern=_FILE_NAME)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)


class BackboneRef(_Strict):
    """Set on a taught (head-only) bundle: its graph takes this backbone bundle's embedding
    output (input "embedding", N x dim) instead of an image; `input` describes the image the
    backbone takes. The server runs the shared backbone once, then the head."""

    name: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dim: int = Field(ge=1)
    # The catalog whose labelled items taught it (its neighbours serve predict?similar=k).
    catalog: str | None = None


class BundleMetadata(_Strict):
    """Everything the server needs to know about a bundle; no constants live in server code."""

    schema_version: Literal[1] = 1
    name: str
    # Shown in responses and logs and kept by catalogs: a short token, no spaces or controls.
    version: str = Field(default="1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
    created_at: datetime
    task: Literal["classification"] = "classification"
    description: str = ""
    input: InputSpec
    outputs: Outputs
    labels_file: str = Field(default=LABELS_FILE, pattern=_FILE_NAME)
    num_classes: int = Field(ge=2)
    metrics: list[Metrics] = Field(default_factory=list)
    provenance: Provenance
    artifact: Artifact
    backbone: BackboneRef | None = None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError("name must be lowercase letters, digits, '-' or '_' (max 64)")
        return v

    @property
    def primary_metrics(self) -> Metrics | None:
        """The test-split metrics if any, else the first recorded ones."""
        for m in self.metrics:
            if m.split == "test":
                return m
        return self.metrics[0] if self.metrics else None


@dataclass(frozen=True)
class Bundle:
    """A bundle whose files have been read and checked against each other."""

    path: Path
    metadata: BundleMetadata
    labels: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def model_path(self) -> Path:
        return self.path / self.metadata.artifact.file


def read_metadata(path: Path) -> BundleMetadata:
    text = read_text(path, "metadata", MAX_METADATA_BYTES)
    try:
        # Its errors (line, column) read better than pydantic's; a repeated key took its last value.
        json.loads(text, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: metadata is not valid JSON ({exc})") from exc
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    try:
        # strict: a wrong type is an error, not coerced ("8" is not a height, "true" not a bool).
        return BundleMetadata.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise BundleError(f"{path}: metadata does not match the schema: {_brief(exc)}") from exc


def _brief(exc: ValidationError) -> str:
    """Pydantic's errors on one line each, without its URLs and echoed input values."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in errors[:5]]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def load_bundle(
    directory: Path, *, verify_hash: bool = True, name: str | None = None, root: Path | None = None
) -> Bundle:
    """Read and cross-check a bundle folder (metadata, labels, artifact hash and size).

    The metadata's name must equal `name`, by default the folder's (versioned taught bundles
    live in <name>/<version>/). The folder and its files must lie, symlinks resolved, inside
    `root` (by default the folder's parent, i.e. the models folder)."""
    try:
        return _load_bundle(directory, verify_hash, name, root)
    except OSError as exc:  # unreadable folder or file (permissions, I/O): one clear reason
        raise BundleError(
            f"{exc.filename or directory}: cannot read ({exc.strerror or exc})"
        ) from exc


def _load_bundle(directory: Path, verify_hash: bool, name: str | None, root: Path | None) -> Bundle:
    base = (root if root is not None else directory.parent).resolve()
    if not directory.is_dir():
        raise BundleError(
            f"{directory}: not a bundle folder (a bundle is a folder with {METADATA_FILE})"
        )
    if not inside(directory, base):
        raise BundleError(f"{directory}: resolves to {directory.resolve()}, outside {base}")
    meta_path = directory / METADATA_FILE
    if meta_path.exists() and not (meta_path.is_file() and inside(meta_path, base)):
        raise BundleError(f"{meta_path}: not a regular file inside {base} (a FIFO? a symlink out?)")
    meta = read_metadata(meta_path)
    if meta.name != (name or directory.name):
        raise BundleError(f"{directory}: metadata name {meta.name!r} differs from folder name")
    labels_path = directory / meta.labels_file
    if not labels_path.is_file():
        raise BundleError(f"{directory}: missing {meta.labels_file}")
    if not inside(labels_path, base):
        raise BundleError(f"{labels_path}: a symlink to a file outside {base}")
    labels = read_labels(labels_path)
    if len(labels) != meta.num_classes:
        raise BundleError(
            f"{directory}: {meta.labels_file} has {len(labels)} labels, metadata says {meta.num_classes}"
        )
    model_path = directory / meta.artifact.file
    if not model_path.is_file():
        raise BundleError(f"{directory}: missing {meta.artifact.file}")
    if not inside(model_path, base):
        raise BundleError(f"{model_path}: a symlink to a file outside {base}")
    size = model_path.stat().st_size
    if size != meta.artifact.bytes:
        raise BundleError(
            f"{model_path}: size {size} bytes differs from metadata ({meta.artifact.bytes})"
        )
    if verify_hash:
        digest = sha256_file(model_path)
        if digest != meta.artifact.sha256:
            raise BundleError(
                f"{model_path}: sha256 {digest[:12]}... differs from metadata "
                f"({meta.artifact.sha256[:12]}...)"
            )
    return Bundle(path=directory, metadata=meta, labels=labels)


def write_bundle(
    directory: Path,
    *,
    model_bytes: bytes,
    metadata: BundleMetadata,
    labels: Sequence[str],
    model_card: str | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Bundle:
    """Write a bundle folder atomically; see app.bundle_write.write_bundle (the one write path)."""
    from app.bundle_write import write_bundle as _write  # it imports this module

    return _write(
        directory,
        model_bytes=model_bytes,
        metadata=metadata,
        labels=labels,
        model_card=model_card,
        files=files,
    )


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
