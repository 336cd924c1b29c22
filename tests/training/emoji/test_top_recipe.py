"""The `emoji_top` recipe (training.emoji.top_recipe): `python -m training train --config
training/configs/santa-emoji-top.yaml` reaches top_ship, and settings that top_ship fixes in code
are refused before anything trains, never silently ignored. Fast: no training, no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from training import recipes
from training.emoji.config import EmojiTopConfig
from training.emoji.top_recipe import run

CONFIG = ROOT / "training" / "configs" / "santa-emoji-top.yaml"


def _cfg(**changes: object) -> EmojiTopConfig:
    cfg = recipes.load_config(CONFIG, EmojiTopConfig)
    return cfg.model_copy(update=changes)


def test_the_shipped_config_is_the_emoji_top_recipe() -> None:
    cfg = recipes.load_config(CONFIG)
    assert isinstance(cfg, EmojiTopConfig) and cfg.fixed_epoch == 5 and cfg.name == "santa"
    assert recipes.get("emoji_top").config is EmojiTopConfig


@pytest.mark.parametrize(
    ("cfg", "options", "message"),
    [
        (_cfg(seed=1), recipes.RunOptions(), "seed must be 0"),
        (_cfg(name="claus"), recipes.RunOptions(), "name must be 'santa'"),
        (_cfg(seeds=[1, 0, 2]), recipes.RunOptions(), "start with seed 0"),
        (_cfg(seeds=[0, 1, 1]), recipes.RunOptions(), "distinct"),
        (_cfg(fixed_epoch=None), recipes.RunOptions(), "need a fixed_epoch"),
        (_cfg(), recipes.RunOptions(epochs=3), "not --epochs"),
        (_cfg(), recipes.RunOptions(data_dir=Path("/tmp")), "not --data-dir"),
        (_cfg(backbone_bundle=ROOT / "models" / "products"), recipes.RunOptions(), "only"),
    ],
)
def test_settings_top_ship_fixes_are_refused_before_training(
    cfg: EmojiTopConfig, options: recipes.RunOptions, message: str, tmp_path: Path
) -> None:
    options = recipes.RunOptions(**{**options.__dict__, "runs_dir": tmp_path})
    with pytest.raises(ValueError, match=message):
        run(cfg, options)
    assert not any(tmp_path.iterdir())  # no run directory was started


def test_the_fixed_epoch_range_is_the_trained_one() -> None:
    with pytest.raises(ValueError):
        EmojiTopConfig.model_validate({**_cfg().model_dump(), "fixed_epoch": 6})
