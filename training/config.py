"""Recipe configs: one YAML per model under training/configs/, one pydantic model per recipe.

Every config shares `RecipeBase` (recipe, name, seed, input, export, limitations, reference
figures for the card); the `recipe` field picks the class (default `scratch`). Parsing goes
through `training.recipes.load_config`, which builds the discriminated union from the recipe
registry, so a YAML is read once and never peeked into. TensorFlow-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.bundle import BundleMetadata, InputSpec

# MBConv blocks of EfficientNet-Lite0 (training/architectures/efficientnet_lite.NUM_BLOCKS;
# a test keeps the two equal). Kept here so parsing a config never imports Keras.
EFFICIENTNET_LITE0_BLOCKS = 16


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def bundle_field(field: str, value: str) -> str:
    """`value` checked by the bundle contract's own rule for metadata `field` (app/bundle.py),
    so that a config the bundle would refuse fails when it is read, not after a whole training
    run (the name also names the run folder: "../x" would have left `runs/`)."""
    try:
        BundleMetadata.__pydantic_validator__.validate_assignment(
            BundleMetadata.model_construct(), field, value
        )
    except ValidationError as exc:
        msg = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"{msg} (the bundle contract's rule)") from None
    return value


class ExportConfig(Section):
    opset: int = Field(default=17, ge=13, le=18)
    out_dir: Path = Path("models")
    version: str = "1"
    parity_atol: float = Field(default=1e-4, gt=0)
    # How many real inputs the Keras-vs-ONNX parity check runs on (recipes with a fixed photo
    # set, such as `pretrained`, use theirs).
    parity_samples: int = Field(default=64, ge=1)
    # Also write `<name>-int8` (static INT8, training/quantize.py) when its top-1 agrees with
    # fp32 on >= 95% of >= 40 real images (transfer recipe).
    int8: bool = False

    @field_validator("version")
    @classmethod
    def _version_ok(cls, v: str) -> str:
        return bundle_field("version", v)


class ReferenceFigure(Section):
    """A figure measured elsewhere, quoted on the model card for comparison (never computed)."""

    what: str
    figures: dict[str, float]  # rates in 0..1, e.g. {precision: 0.971}
    dataset: str | None = None
    n_samples: int | None = Field(default=None, ge=1)
    source: str | None = None


class RecipeBase(Section):
    recipe: str
    name: str
    description: str = ""
    seed: int
    input: InputSpec
    export: ExportConfig = ExportConfig()
    # Free-form card notes copied into the model card.
    limitations: list[str] = Field(default_factory=list)
    references: list[ReferenceFigure] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return bundle_field("name", v)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --- scratch: a CNN trained from random weights on arrays or an image folder -----------------


class DataConfig(Section):
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


class ModelConfig(Section):
    architecture: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # Ship mean(model(x), model(mirror(x))) as one graph (training/tta.py); only where a mirror
    # image is the same class (clothes yes, digits no).
    flip_tta: bool = False


class AugmentConfig(Section):
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


class TrainParams(Section):
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


class ScratchConfig(RecipeBase):
    """training/configs/{products,digits,lecture-*,cifar10-bird,folder-example}.yaml."""

    recipe: Literal["scratch"] = "scratch"
    data: DataConfig
    model: ModelConfig
    augment: AugmentConfig = AugmentConfig()
    train: TrainParams = TrainParams()


# --- transfer: frozen pretrained backbone + a head trained on an image folder ---------------


class FolderData(Section):
    # One subfolder per class; None = given on the command line (--data-dir).
    path: Path | None = None
    val_fraction: float = Field(default=0.15, ge=0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    limit_per_class: int | None = Field(default=None, ge=3)


class BackboneConfig(Section):
    architecture: Literal["efficientnet_lite0"] = "efficientnet_lite0"
    weights: str = "imagenet"


class HeadConfig(Section):
    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    early_stopping_patience: int = Field(default=8, ge=1)
    class_weight: Literal["none", "balanced"] = "balanced"
    # Also cache and train on the embedding of each training image flipped left-right.
    flip_augment: bool = True


class FineTuneConfig(Section):
    enabled: bool = False
    # How many of the MBConv blocks (counted from the top) to unfreeze, plus the head conv.
    blocks: int = Field(default=2, ge=0, le=EFFICIENTNET_LITE0_BLOCKS)
    epochs: int = Field(default=3, ge=1)
    learning_rate: float = Field(default=1e-5, gt=0)
    batch_size: int = Field(default=16, ge=1)


class TransferConfig(RecipeBase):
    """training/configs/santa.yaml: `recipe: transfer`."""

    recipe: Literal["transfer"] = "transfer"
    data: FolderData = FolderData()
    backbone: BackboneConfig = BackboneConfig()
    head: HeadConfig = HeadConfig()
    fine_tune: FineTuneConfig = FineTuneConfig()
    # Binary only: label whose probability gets a threshold calibrated on the validation split.
    positive_label: str | None = None
    # Embedding cache. A relative path is under the runs dir (--runs-dir, default runs/), so
    # the default is runs/cache/embeddings and a run with another runs dir writes nothing into
    # ./runs; an absolute path is used as it is (e.g. one cache shared by several runs dirs).
    cache_dir: Path = Path("cache/embeddings")

    def cache_path(self, runs_dir: Path) -> Path:
        """Where the embedding cache lives for a run whose runs dir is `runs_dir`."""
        return self.cache_dir if self.cache_dir.is_absolute() else runs_dir / self.cache_dir


# --- pretrained: the ImageNet network as it is, with a fixed head ---------------------------


class PretrainedConfig(RecipeBase):
    """training/configs/{imagenet,bird}.yaml: `recipe: pretrained`, no training."""

    recipe: Literal["pretrained"] = "pretrained"
    architecture: Literal["efficientnet_lite0"] = "efficientnet_lite0"
    weights: str = "imagenet"
    # Which fixed head follows the ImageNet softmax (training/pretrained_heads.py).
    head: Literal["imagenet", "bird"]
    # Resize modes tried on the evaluation photos; the best top-1 (then top-5) wins.
    resize_candidates: list[Literal["stretch", "center_crop", "letterbox"]] = Field(min_length=1)
    positive_label: str | None = None
