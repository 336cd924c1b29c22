"""Configs: every shipped training config validates and round-trips YAML -> TrainConfig -> YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
# Configs of this schema (other recipes, e.g. transfer learning, have their own).
NAMES = [
    "products",
    "digits",
    "lecture-mlp",
    "lecture-cnn",
    "lecture-cnn-augmented",
    "cifar10-bird",
    "folder-example",
]


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name: str, tmp_path: Path) -> None:
    cfg = TrainConfig.from_yaml(CONFIGS / f"{name}.yaml")
    text = cfg.to_yaml()
    copy = tmp_path / "resolved.yaml"
    copy.write_text(text)
    again = TrainConfig.from_yaml(copy)
    assert again == cfg
    assert again.to_yaml() == text
    # The resolved copy spells out every default, so a run records all of its settings.
    resolved = yaml.safe_load(text)
    assert {"seed", "data", "input", "model", "augment", "train", "export"} <= set(resolved)


def test_digits_never_flip_and_products_do() -> None:
    assert not TrainConfig.from_yaml(CONFIGS / "digits.yaml").augment.flip_horizontal
    assert TrainConfig.from_yaml(CONFIGS / "products.yaml").augment.flip_horizontal


def test_config_rejects_typos_and_missing_seed() -> None:
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    raw["train"]["epoch"] = 3
    with pytest.raises(ValidationError, match="epoch"):
        TrainConfig.model_validate(raw)
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    del raw["seed"]
    with pytest.raises(ValidationError, match="seed"):
        TrainConfig.model_validate(raw)
