"""training.emoji.products_finetune: the shipped `products` graph's weights in Keras (real bundle,
real onnxruntime) and one fine-tuning epoch on a few images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from app.bundle import Bundle, load_bundle
from training.emoji import products_finetune as pf
from training.emoji.catalog import PROJECT_ROOT

BUNDLE = PROJECT_ROOT / "models" / "products"

pytestmark = pytest.mark.slow  # imports TensorFlow (~10 s)


def _uploads(n: int, seed: int = 0) -> np.ndarray:
    """Light blobs of random size and place on black or white, as RGB uploads."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 40, 40, 3), np.uint8)
    for k in range(n):
        y0, x0, h, w = rng.integers(0, 20, 4)
        out[k, y0 : y0 + h + 8, x0 : x0 + w + 8] = rng.integers(60, 255, 3)
        if k % 2:
            out[k] = 255 - out[k]
    return out


def _model_and_batch(seed: int) -> tuple[Bundle, Any, np.ndarray, np.ndarray]:
    """The shipped bundle, its graph's weights in Keras, and 16 prepared uploads with labels."""
    bundle = load_bundle(BUNDLE)
    x = pf.prepare_all(_uploads(16, seed=seed), bundle.metadata.input)
    return bundle, pf.build_model(bundle), x, np.arange(16) % 10


def test_keras_model_matches_the_shipped_graph_on_the_serving_path() -> None:
    bundle = load_bundle(BUNDLE)
    x = pf.prepare_all(_uploads(12), bundle.metadata.input)
    sess = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    want = sess.run(["probs"], {"image": x})[0]
    got = pf.tta_probs(pf.build_model(bundle), x)
    assert want.shape == got.shape == (12, 10)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_one_epoch_moves_the_kernels_and_keeps_the_folded_batchnorm() -> None:
    _, model, x, y = _model_and_batch(seed=1)
    before_k = model.get_layer("s1_1_conv").get_weights()[0].copy()
    before_bn = [w.copy() for w in model.get_layer("s1_1_bn").get_weights()]
    ft = pf.FineTune(epochs=1, fm_per_epoch=8, drawing_share=0.5, learning_rate=1e-3)
    pf.finetune(model, x[:12], y[:12], x[12:], y[12:], ft)
    assert np.abs(model.get_layer("s1_1_conv").get_weights()[0] - before_k).max() > 0
    for a, b in zip(model.get_layer("s1_1_bn").get_weights(), before_bn, strict=True):
        np.testing.assert_array_equal(a, b)


def test_frozen_first_stage_and_distillation_targets() -> None:
    bundle, model, x, y = _model_and_batch(seed=2)
    s1 = model.get_layer("s1_2_conv").get_weights()[0].copy()
    s2 = model.get_layer("s2_1_conv").get_weights()[0].copy()
    ft = pf.FineTune(
        epochs=1,
        fm_per_epoch=8,
        drawing_share=0.5,
        learning_rate=1e-3,
        distill=0.5,
        freeze_stages=1,
    )
    with pytest.raises(ValueError, match="teacher"):
        pf.finetune(pf.build_model(bundle), x[:12], y[:12], x[12:], y[12:], ft)
    pf.finetune(model, x[:12], y[:12], x[12:], y[12:], ft, teacher=pf.build_model(bundle))
    np.testing.assert_array_equal(model.get_layer("s1_2_conv").get_weights()[0], s1)
    assert np.abs(model.get_layer("s2_1_conv").get_weights()[0] - s2).max() > 0


def test_style_views_join_the_training_views_only_when_asked() -> None:
    assert pf.FineTune().train_views() == pf.TRAIN_VIEWS
    views = pf.FineTune(style_views=4).train_views()
    assert views == {**pf.TRAIN_VIEWS, "style": 4}
    assert "style" not in pf.TRAIN_VIEWS  # the module's default stays v2's recipe


def test_the_network_comes_from_the_config_through_the_one_reader(tmp_path: Path) -> None:
    """build_model read products.yaml with its own yaml.safe_load and typed "modern_cnn" in:
    a config naming another network was ignored. Now the config (read by
    training.recipes.load_config) names the network, and a config that is not a scratch
    recipe's, or one with a key given twice, is refused as every config is."""
    from training.recipes import ConfigError

    bundle = load_bundle(BUNDLE)
    raw = yaml.safe_load(pf.CONFIG.read_text())
    raw["model"] = {"architecture": "small_resnet", "kwargs": {"widths": [8, 16, 32]}}
    other = tmp_path / "resnet.yaml"
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"graph has 6 convs/2 dense, model differs"):
        pf.build_model(bundle, other)
    with pytest.raises(ConfigError, match="needs ScratchConfig"):
        pf.build_model(bundle, PROJECT_ROOT / "training" / "configs" / "santa.yaml")
    twice = tmp_path / "twice.yaml"
    twice.write_text(pf.CONFIG.read_text() + "seed: 1\n")
    with pytest.raises(ConfigError, match="given twice"):
        pf.build_model(bundle, twice)


def test_a_fold_of_several_members_scores_their_mean() -> None:
    bundle, _, x, y = _model_and_batch(seed=3)
    fm = {"x_train": x[:8], "y_train": y[:8], "x_val": x[8:12], "y_val": y[8:12]}
    fm |= {"x_test": x[12:], "y_test": y[12:]}
    kinds = np.array(["train/drawing"] * 4 + [f"eval/{k}" for k in pf.EVAL_KINDS])
    n = len(kinds)
    dr = {
        "x": np.resize(x, (n, *x.shape[1:])),
        "y": np.arange(n) % 10,
        "style": np.array(["noto"] * 4 + ["twemoji"] * (n - 4)),
        "kind": kinds,
    }
    ft = pf.FineTune(epochs=1, fm_per_epoch=8, drawing_share=0.5, learning_rate=1e-3, members=2)
    models, res = pf.run_fold(bundle, "twemoji", fm, dr, ft)
    assert len(models) == 2
    # The members trained with different seeds, and the fold scored the mean of their softmax.
    a, b = (m.get_layer("s1_1_conv").get_weights()[0] for m in models)
    assert np.abs(a - b).max() > 0
    mean = pf.ensemble_probs(models, fm["x_test"])
    np.testing.assert_allclose(mean.sum(1), 1.0, atol=1e-5)
    want = float((mean.argmax(1) == fm["y_test"]).mean())
    assert res["fmnist_test"] == want
    for kind in pf.EVAL_KINDS:
        assert res[kind]["n"] == 1 and len(res[f"{kind}_members"]) == 2
