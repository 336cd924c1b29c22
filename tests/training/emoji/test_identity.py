"""training.emoji.identity: the emoji-identity softmax head, its leave-one-style-out thresholds,
its fold heads kept for CI, and its ONNX composition onto the real imagenet graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.metrics import calibrate_threshold
from tests.conftest import ROOT
from training.emoji.check import _fold_logits, save_fold_heads
from training.emoji.identity import IdentityHead, fit_identity_head
from training.emoji.loso import run_loso
from training.emoji.style_sets import StyleSet
from training.emoji.tasks import Task

BIRDS = ("dove", "owl")
OTHERS = ("whale", "rabbit", "pear", "arm")
KEYS = BIRDS + OTHERS


def _pictures(rng: np.random.Generator, offset: float, n: int = 12) -> tuple[np.ndarray, ...]:
    """n pictures of each emoji: its own centroid (shared by every style) plus a style offset."""
    centroids = np.random.default_rng(99).normal(scale=8.0, size=(len(KEYS), 8))
    keys = np.repeat(np.asarray(KEYS), n)
    x = centroids[np.repeat(np.arange(len(KEYS)), n)] + offset
    x = (x + rng.normal(scale=0.5, size=x.shape)).astype(np.float32)
    y = np.isin(keys, BIRDS).astype(np.int64)
    return x, y, keys


def _sets(styles: tuple[str, ...] = ("a", "b", "c", "d")) -> dict[str, StyleSet]:
    rng = np.random.default_rng(0)
    out = {}
    for i, s in enumerate(styles):
        x, y, keys = _pictures(rng, 0.2 * i, n=100)
        aug = x + rng.normal(scale=0.1, size=x.shape).astype(np.float32)
        out[s] = StyleSet(s, [], y, x, [(aug, y)], keys=keys, aug_keys=[keys])
    return out


TOY = Task(
    "toy", ("no", "yes"), lambda p: 0, False, False, "precision", 0.9, identity=True,
    identity_l2=1e-4, identity_epochs=40,
)  # fmt: skip


@pytest.mark.slow
def test_score_is_the_positive_emojis_summed_softmax_probability() -> None:
    x, _, keys = _pictures(np.random.default_rng(1), 0.0)
    head = fit_identity_head(
        x, keys.tolist(), frozenset(BIRDS), l2=1e-4, epochs=60, seed=0, batch=16, lr=1e-2
    )
    assert head.weights.shape == (8, len(KEYS)) and int(head.positive.sum()) == len(BIRDS)
    assert np.array_equal(head.weights, head.weights.astype(np.float16).astype(np.float32))
    z = head.class_logits(x)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert np.allclose(head.score(x), p[:, head.positive].sum(axis=1), atol=1e-9)
    is_bird = np.isin(keys, BIRDS)
    assert head.score(x)[is_bird].min() > head.score(x)[~is_bird].max()  # separable toy data
    # Large logits stay finite (log-sum-exp, not a sum of exponentials).
    assert np.isfinite(head.logits(x * 1e3)).all()


def test_fit_refuses_a_task_without_positive_or_negative_emoji() -> None:
    x, _, keys = _pictures(np.random.default_rng(1), 0.0)
    with pytest.raises(ValueError, match="need emoji"):
        fit_identity_head(x, keys.tolist(), frozenset(), l2=1e-4, epochs=1, seed=0)
    with pytest.raises(ValueError, match="need emoji"):
        fit_identity_head(x, keys.tolist(), frozenset(KEYS), l2=1e-4, epochs=1, seed=0)


@pytest.mark.slow
def test_fold_thresholds_come_from_the_other_styles_held_out_scores() -> None:
    sets = _sets()
    res = run_loso(TOY, sets)
    scores, y = res["scores"]
    sizes = [len(s.y) for s in sets.values()]
    parts = dict(zip(sets, np.split(scores, np.cumsum(sizes)[:-1]), strict=True))
    for h in sets:
        others = [s for s in sets if s != h]
        want = calibrate_threshold(
            np.concatenate([parts[s] for s in others]),
            np.concatenate([sets[s].y for s in others]) == 1,
            "precision",
            0.9,
        ).threshold
        assert res["folds"][h]["threshold"] == want
        assert isinstance(res["folds"][h]["head"], IdentityHead)
    assert res["pooled"]["n"] == len(y) == sum(sizes)
    assert res["pooled"]["roc_auc"] > 0.95, res["pooled"]  # every fold learned the emoji


@pytest.mark.slow  # 1.7 s: full runs only
def test_fold_heads_with_different_classes_round_trip_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x, _, keys = _pictures(rng, 0.0)
    keep = keys != "pear"  # a fold whose training styles lack an emoji has fewer classes
    heads = [
        fit_identity_head(x, keys.tolist(), frozenset(BIRDS), l2=1e-4, epochs=5, seed=0),
        fit_identity_head(x[keep], keys[keep].tolist(), frozenset(BIRDS), l2=1e-4, epochs=5, seed=0),
    ]  # fmt: skip
    assert heads[0].weights.shape[1] != heads[1].weights.shape[1]
    folds = {s: {"head": h, "threshold": 0.5, "tp": 1, "fn": 0, "fp": 0, "tn": 1}
             for s, h in zip(("a", "b"), heads, strict=True)}  # fmt: skip
    path = tmp_path / "loso-heads.npz"
    save_fold_heads(path, TOY, {"folds": folds}, "sha")
    z = np.load(path)
    for i, h in enumerate(heads):
        assert np.array_equal(_fold_logits(z, i, x), h.logits(x))


@pytest.mark.slow
def test_composed_identity_graph_matches_the_numpy_head_on_real_pictures() -> None:
    from tests.images import rectangles
    from training.emoji.compose import compose, parity
    from training.emoji.embed import Backbone
    from training.emoji.heads import features
    from training.serving_eval import open_model

    backbone = Backbone(ROOT / "models" / "imagenet", threads=1)
    imgs = rectangles(6)
    emb, mass = backbone(imgs)
    x = features(emb, mass, False)
    keys = [KEYS[i % len(KEYS)] for i in range(len(x))]
    head = fit_identity_head(
        np.concatenate([x, x + 0.01]), keys * 2, frozenset(BIRDS), l2=1e-4, epochs=20, seed=0
    )
    meta = backbone.bundle.metadata.model_copy(update={"name": "toy", "num_classes": 2})
    for combine in (None, 0.3):
        graph = compose(backbone.bundle.model_path, head, combine)
        model = open_model(graph, metadata=meta, labels=("a", "b"))
        assert parity(model, head, imgs, x, mass, combine) < 1e-4


def test_the_shipped_bird_config_builds_an_identity_head_and_the_card_names_its_file() -> None:
    """The card's Reproduce line named `training/configs/<name>-emoji.yaml` unless the YAML
    repeated its own path in a `config_file` key; bird-emoji-identity.yaml is `bird`, so
    without that key the card named bird-emoji.yaml, another recipe. The line now names the
    file that was run (RunOptions.config_path) and the key is gone."""
    from training.emoji.card import reproduce
    from training.emoji.config import EmojiHeadConfig
    from training.recipes import load_config

    path = Path("training/configs/bird-emoji-identity.yaml")
    cfg = load_config(ROOT / path, EmojiHeadConfig)
    assert cfg.head == "identity" and cfg.name == "bird"
    assert "config_file" not in EmojiHeadConfig.model_fields
    line = reproduce(path)
    assert line == f"scripts/fetch-data && python -m training train --config {path}"
    assert reproduce(Path.cwd() / path) == line  # shown relative to the working folder
    assert reproduce(None).endswith("--config <this config>")
    card = (ROOT / "models" / "bird" / "README.md").read_text()
    assert line in card and "emoji-identity softmax head" in card
