"""training/pretrained_heads.py: the imagenet and bird heads, re-run on the shipped bundles.

The heads' evaluation code applied to the committed models/imagenet and models/bird graphs must
reproduce the figures recorded in their metadata (the bundles themselves are not rebuilt)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from app.bundle import load_bundle
from training.config import PretrainedConfig
from training.recipes import load_config
from training.serving_eval import open_model

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "training" / "configs"


def _head(name: str, photos_dir: Path):  # type: ignore[no-untyped-def]
    from training.pretrained_heads import HEADS

    cfg = load_config(CONFIGS / f"{name}.yaml", PretrainedConfig)
    return cfg, HEADS[cfg.head](cfg, photos_dir, ROOT / "models")


def test_every_configurable_head_exists() -> None:
    from training.pretrained_heads import HEADS

    literal = PretrainedConfig.model_fields["head"].annotation
    assert set(HEADS) == set(get_args(literal))


def test_bird_head_sums_the_bird_classes() -> None:
    import keras

    from training import imagenet

    cfg = load_config(CONFIGS / "bird.yaml", PretrainedConfig)
    from training.pretrained_heads import BirdHead

    inp = keras.Input((4,))
    base = keras.Model(inp, keras.layers.Dense(1000, activation="softmax")(inp))
    model = BirdHead(cfg, None, ROOT / "models").keras_model(base)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    p, full = np.asarray(model(x)), np.asarray(base(x))
    np.testing.assert_allclose(p[:, 1], full[:, list(imagenet.BIRD_INDICES)].sum(1), atol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_imagenet_head_reproduces_the_shipped_figures(photos_dir: Path) -> None:
    _cfg, head = _head("imagenet", photos_dir)
    bundle = load_bundle(ROOT / "models" / "imagenet")
    model = open_model(bundle)
    mode, section, note = head.choose_resize(model)
    assert mode == bundle.metadata.input.resize.mode
    metric, _ = head.evaluate(model, bundle.metadata.input, note)
    shipped = bundle.metadata.metrics[0]
    assert (metric.n_samples, metric.accuracy, metric.top5_accuracy) == (
        shipped.n_samples,
        shipped.accuracy,
        shipped.top5_accuracy,
    )
    assert metric.extra == shipped.extra
    assert shipped.notes is not None and note in shipped.notes  # same per-mode scores
    assert "1 of those 20 photos is not square" in section.paragraphs[0]


@pytest.mark.slow
def test_bird_head_reproduces_the_shipped_figures(photos_dir: Path) -> None:
    _cfg, head = _head("bird", photos_dir)
    bundle = load_bundle(ROOT / "models" / "bird")
    metric, section = head.evaluate(open_model(bundle), bundle.metadata.input, "")
    # models/bird is now the emoji_head bundle (training/configs/bird-emoji.yaml: the ImageNet
    # bird-mass rule or a drawing head); its photo figures are the entry on the real photos,
    # which the pretrained head's evaluation must reproduce on the same 73 photos.
    shipped = next(m for m in bundle.metadata.metrics if m.dataset.startswith("real photos"))
    for key in ("n_samples", "accuracy", "precision", "recall", "f1", "threshold"):
        assert getattr(metric, key) == getattr(shipped, key), key
    common = set(metric.extra) & set(shipped.extra)
    assert {"tp", "fp", "fn", "tn"} <= common
    assert {k: metric.extra[k] for k in common} == {k: shipped.extra[k] for k in common}
    assert "Scores by source:" in [t.caption for t in section.tables]
