"""TrainConfig: one YAML per model under training/configs/; the resolved copy goes into the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from app.bundle import InputSpec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    source: Literal["fashion_mnist", "mnist", "cifar10", "folder"]
    # Folder holding the raw files; None = the project's data dir for the source.
    path: Path | None = None
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.0, ge=0, lt=0.5)  # folders have no official test split
    # Cap on training examples (stratified); handy for quick runs and tests.
    limit_train: int | None = Field(default=None, ge=10)
    limit_test: int | None = Field(default=None, ge=10)
    # CIFAR-10 only: collapse to one-vs-rest, e.g. "bird" -> [not_bird, bird].
    binary_positive: str | None = None
    cache: bool = True
    # Human-readable name recorded in metrics/metadata (default: from the source).
    dataset_name: str | None = None

    @property
    def display_name(self) -> str:
        if self.dataset_name:
            return self.dataset_name
        base = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}
        name = base.get(self.source, self.path.name if self.path else "image folder")
        return f"{name} ({self.binary_positive} vs rest)" if self.binary_positive else name


class ModelConfig(_Section):
    architecture: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # Ship mean(model(x), model(mirror(x))) as one graph (training/tta.py); only where a mirror
    # image is the same class (clothes yes, digits no).
    flip_tta: bool = False


class AugmentConfig(_Section):
    # Never for digits or text: a mirrored 2 is not a 2.
    flip_horizontal: bool = False
    translate: float = Field(default=0.0, ge=0, le=0.5)  # fraction of height/width
    rotation: float = Field(default=0.0, ge=0, le=0.5)  # fraction of a full turn
    zoom: float = Field(default=0.0, ge=0, le=0.5)
    contrast: float = Field(default=0.0, ge=0, le=1)
    # Probability of blanking a random rectangle (2-20% of the image; "random erasing"/cutout).
    erasing: float = Field(default=0.0, ge=0, le=1)
    # How pixels uncovered by translate/rotate/zoom are filled (constant = black).
    fill_mode: Literal["constant", "reflect", "nearest", "wrap"] = "constant"
    mixup_alpha: float = Field(default=0.0, ge=0)


class TrainParams(_Section):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "cosine", "plateau"] = "constant"
    warmup_epochs: int = Field(default=0, ge=0)
    min_lr_fraction: float = Field(default=0.01, ge=0, le=1)  # cosine floor / plateau floor
    plateau_patience: int = Field(default=3, ge=1)
    plateau_factor: float = Field(default=0.5, gt=0, lt=1)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    # Which validation metric picks the checkpoint that is restored at the end.
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    class_weight: Literal["none", "balanced"] = "none"
    # mixed_bfloat16 is ~1.5x faster on CPUs with AVX512-BF16/AMX; export is always float32.
    precision: Literal["float32", "mixed_bfloat16"] = "float32"
    verbose: int = Field(default=2, ge=0, le=2)


class ExportConfig(_Section):
    opset: int = Field(default=17, ge=13, le=18)
    out_dir: Path = Path("models")
    version: str = "1"
    parity_atol: float = Field(default=1e-4, gt=0)
    parity_samples: int = Field(default=64, ge=1)


class TrainConfig(_Section):
    name: str
    description: str = ""
    seed: int
    data: DataConfig
    input: InputSpec
    model: ModelConfig
    augment: AugmentConfig = AugmentConfig()
    train: TrainParams = TrainParams()
    export: ExportConfig = ExportConfig()
    # Free-form card notes (limitations etc.) copied into the model card.
    limitations: list[str] = Field(default_factory=list)

    @classmethod
    def from_yaml(cls, path: Path) -> TrainConfig:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a YAML mapping")
        return cls.model_validate(raw)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
