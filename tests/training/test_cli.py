"""The training CLI routes each config to its recipe."""

from __future__ import annotations

from pathlib import Path

from training.__main__ import _recipe

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_recipes_of_shipped_configs() -> None:
    assert _recipe(CONFIGS / "santa.yaml") == "transfer"
    assert _recipe(CONFIGS / "imagenet.yaml") == "pretrained"
    assert _recipe(CONFIGS / "bird.yaml") == "pretrained"
    assert _recipe(CONFIGS / "products.yaml") == "scratch"
    assert _recipe(CONFIGS / "digits.yaml") == "scratch"
