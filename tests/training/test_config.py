"""Configs: every shipped config validates and round-trips YAML -> config -> YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from training.config import ScratchConfig
from training.recipes import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name: str, tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    text = cfg.to_yaml()
    copy = tmp_path / "resolved.yaml"
    copy.write_text(text)
    again = load_config(copy)
    assert again == cfg
    assert again.to_yaml() == text
    # The resolved copy spells out every default, so a run records all of its settings.
    resolved = yaml.safe_load(text)
    assert {"recipe", "seed", "input", "export", "limitations", "references"} <= set(resolved)
    if isinstance(cfg, ScratchConfig):
        assert {"data", "model", "augment", "train"} <= set(resolved)


def test_digits_never_flip_and_products_do() -> None:
    assert not load_config(CONFIGS / "digits.yaml", ScratchConfig).augment.flip_horizontal
    assert load_config(CONFIGS / "products.yaml", ScratchConfig).augment.flip_horizontal


def test_config_rejects_typos_and_missing_seed() -> None:
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    raw["train"]["epoch"] = 3
    with pytest.raises(ValidationError, match="epoch"):
        ScratchConfig.model_validate(raw)
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    del raw["seed"]
    with pytest.raises(ValidationError, match="seed"):
        ScratchConfig.model_validate(raw)
