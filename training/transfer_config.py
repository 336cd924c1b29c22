"""TransferConfig: the YAML schema of the transfer-learning recipe (training/configs/santa.yaml).

`recipe: transfer` tells these configs apart from the from-scratch TrainConfig ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from app.bundle import InputSpec
from training.architectures.efficientnet_lite import NUM_BLOCKS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FolderData(_Section):
    # One subfolder per class; None = given on the command line (--data-dir).
    path: Path | None = None
    val_fraction: float = Field(default=0.15, ge=0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    limit_per_class: int | None = Field(default=None, ge=3)


class BackboneConfig(_Section):
    architecture: Literal["efficientnet_lite0"] = "efficientnet_lite0"
    weights: str = "imagenet"


class HeadConfig(_Section):
    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    early_stopping_patience: int = Field(default=8, ge=1)
    class_weight: Literal["none", "balanced"] = "balanced"
    # Also cache and train on the embedding of each training image flipped left-right.
    flip_augment: bool = True


class FineTuneConfig(_Section):
    enabled: bool = False
    # How many of the 16 MBConv blocks (counted from the top) to unfreeze, plus the head conv.
    blocks: int = Field(default=2, ge=0, le=NUM_BLOCKS)
    epochs: int = Field(default=3, ge=1)
    learning_rate: float = Field(default=1e-5, gt=0)
    batch_size: int = Field(default=16, ge=1)


class TransferExport(_Section):
    out_dir: Path = Path("models")
    version: str = "1"
    opset: int = Field(default=17, ge=13, le=18)
    parity_atol: float = Field(default=1e-4, gt=0)
    # Also write `<name>-int8` (static INT8, training/quantize.py), calibrated on the folder's
    # images, when its top-1 agrees with fp32 on >= 95% of them (and there are >= 40).
    int8: bool = False


class TransferConfig(_Section):
    recipe: Literal["transfer"] = "transfer"
    name: str
    description: str = ""
    seed: int
    data: FolderData = FolderData()
    backbone: BackboneConfig = BackboneConfig()
    input: InputSpec
    head: HeadConfig = HeadConfig()
    fine_tune: FineTuneConfig = FineTuneConfig()
    # Binary only: label whose probability gets a threshold calibrated on the validation split.
    positive_label: str | None = None
    cache_dir: Path = Path("runs/cache/embeddings")
    run_dir: Path = Path("runs")
    export: TransferExport = TransferExport()
    limitations: list[str] = Field(default_factory=list)

    @classmethod
    def from_yaml(cls, path: Path) -> TransferConfig:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a YAML mapping")
        return cls.model_validate(raw)
