"""EfficientNet-Lite0 (training/architectures/efficientnet_lite.py): Keras port and shipped ONNX against PyTorch reference
outputs (tests/fixtures/efficientnet_reference_logits.npz, made by
scripts/make-efficientnet-reference with PyTorch 2.13.0 and efficientnet-lite-pytorch 0.1.0)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA, ROOT, require

FIXTURES = ROOT / "tests" / "fixtures"
REFERENCE = FIXTURES / "efficientnet_reference_logits.npz"
WEIGHTS = DATA / "weights" / "efficientnet-lite0-57934424.pth"
TOL = 1e-4


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


def reference_inputs(photos: list[str]) -> np.ndarray:
    """224x224 RGB, Pillow bilinear stretch, float 0..255: exactly what the reference saw."""
    arrays = []
    for p in photos:
        img = Image.open(require(DATA / "photos" / p)).convert("RGB")
        arrays.append(np.asarray(img.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.uint8))
    return np.stack(arrays)


def checked_inputs(ref: dict[str, np.ndarray]) -> np.ndarray:
    pixels = reference_inputs([str(p) for p in ref["photos"]])
    digests = [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
    assert digests == ref["input_sha256"].tolist(), (
        "preprocessed inputs differ from those the reference saw (Pillow's resize changed?); "
        "rerun scripts/make-efficientnet-reference"
    )
    return pixels.astype(np.float32)


@pytest.fixture(scope="module")
def keras_model():  # type: ignore[no-untyped-def]
    from training.architectures import create_model

    require(WEIGHTS)
    return create_model("efficientnet_lite0", (224, 224, 3), 1000, weights="imagenet")


@pytest.mark.slow
def test_keras_port_matches_pytorch_reference(keras_model) -> None:  # type: ignore[no-untyped-def]
    import keras

    ref = reference()
    x = checked_inputs(ref)
    probe = keras.Model(
        keras_model.input,
        [keras_model.get_layer("logits").output, keras_model.get_layer("embedding").output],
    )
    logits, features = (np.asarray(t) for t in probe(x, training=False))
    assert np.max(np.abs(logits - ref["logits"])) <= TOL
    assert np.max(np.abs(features - ref["features"])) <= TOL
    assert (logits.argmax(1) == ref["logits"].argmax(1)).all()


@pytest.mark.slow
def test_architecture_contract(keras_model) -> None:  # type: ignore[no-untyped-def]
    from training.architectures import available, create_model

    assert "efficientnet_lite0" in available()
    assert keras_model.count_params() == 4_694_024
    assert keras_model.get_layer("embedding").output.shape[-1] == 1280
    assert keras_model.input.shape[1:] == (224, 224, 3)
    # a fresh head for another task keeps the backbone weights
    five = create_model("efficientnet_lite0", (224, 224, 3), 5, weights="imagenet")
    assert five.output.shape[-1] == 5
    w_ref = keras_model.get_layer("block15_project_conv").get_weights()[0]
    assert np.array_equal(five.get_layer("block15_project_conv").get_weights()[0], w_ref)
    with pytest.raises(ValueError, match="RGB"):
        create_model("efficientnet_lite0", (224, 224, 1), 5)


@pytest.mark.slow
def test_fine_tune_keeps_batchnorm_and_lower_blocks_frozen(keras_model) -> None:  # type: ignore[no-untyped-def]
    from training.architectures import create_model
    from training.config import FineTuneConfig, TransferConfig
    from training.transfer_head import fine_tune

    model = create_model("efficientnet_lite0", (96, 96, 3), 2, weights="imagenet")
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    cfg = TransferConfig(
        name="ft",
        seed=0,
        input={"height": 96, "width": 96, "channels": 3, "color": "rgb"},
        fine_tune=FineTuneConfig(
            enabled=True, blocks=1, epochs=1, learning_rate=1e-3, batch_size=4
        ),
    )
    x = reference_inputs(["skimage/chelsea.png", "foolbox/imagenet_17_22.jpg"] * 2).astype(
        np.float32
    )
    x = x[:, ::2, ::2][:, :96, :96]
    fine_tune(cfg, model, x, np.array([0, 1, 0, 1]), 2)

    def changed(name: str) -> bool:
        after = model.get_layer(name).get_weights()
        return any(not np.array_equal(a, b) for a, b in zip(after, before[name], strict=True))

    assert changed("block15_project_conv") and changed("head_conv") and changed("logits")
    assert not changed("block14_project_conv") and not changed("stem_conv")
    assert not changed("head_bn") and not changed("block15_project_bn")  # moving stats too


# --- the shipped imagenet graph ------------------------------------------------------------


def _bundle(name: str):  # type: ignore[no-untyped-def]
    from app.bundle import load_bundle
    from app.runtime import OnnxModel

    return OnnxModel(load_bundle(ROOT / "models" / name), ["CPUExecutionProvider"])


def test_shipped_imagenet_onnx_matches_pytorch_reference() -> None:
    from training.weights import load_torch_state_dict

    ref = reference()
    out = _bundle("imagenet").run(checked_inputs(ref))
    assert out.embedding is not None
    assert np.max(np.abs(out.embedding - ref["features"])) <= TOL
    # The bundle outputs probabilities; the logits follow from the embedding and the classifier.
    sd = load_torch_state_dict(require(WEIGHTS))
    logits = out.embedding @ sd["_fc.weight"].T + sd["_fc.bias"]
    assert np.max(np.abs(logits - ref["logits"])) <= TOL
    e = np.exp(ref["logits"] - ref["logits"].max(1, keepdims=True))
    assert np.max(np.abs(out.probs - e / e.sum(1, keepdims=True))) <= 1e-5


def test_config_block_count_matches_the_architecture() -> None:
    from training.architectures.efficientnet_lite import NUM_BLOCKS
    from training.config import EFFICIENTNET_LITE0_BLOCKS

    assert NUM_BLOCKS == EFFICIENTNET_LITE0_BLOCKS
