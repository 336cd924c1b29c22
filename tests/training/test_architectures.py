"""Every registered architecture builds, exposes `embedding`, and exports with parity.

Keras and the modules that load it are imported inside the tests, not at collection: every
xdist worker collects every module, and TensorFlow's import cost each worker 5-8 s there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.bundle import InputSpec
from app.runtime import OnnxModel

OURS = ["tiny_cnn", "mlp", "lecture_cnn", "bird_cnn", "modern_cnn", "small_resnet"]


def test_registry_lists_ours() -> None:
    from training.architectures import available

    assert set(OURS) <= set(available())


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)], ids=["gray28", "rgb32"])
def test_builds_with_embedding_before_softmax(name: str, shape: tuple[int, int, int]) -> None:
    import keras

    from training.architectures import create_model

    model = create_model(name, shape, 3)
    assert model.output_shape == (None, 3)
    emb = model.get_layer("embedding")
    # The classifier reads the embedding (possibly through dropout): no other layer in between.
    assert model.layers[-1].name == "classifier"
    chain = model.layers[model.layers.index(emb) + 1 : -1]
    assert all(isinstance(layer, keras.layers.Dropout) for layer in chain)
    out = model(np.full((2, *shape), 255.0, np.float32), training=False)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["modern_cnn", "small_resnet"])
def test_export_parity_with_batch_norm(name: str, tmp_path: Path, fashion_mnist) -> None:  # type: ignore[no-untyped-def]
    import keras

    from training.architectures import create_model
    from training.export import export_bundle

    keras.utils.set_random_seed(0)
    model = create_model(name, (28, 28, 1), 10, widths=(8, 16), embedding_dim=16)
    # Non-trivial BN statistics, as after training.
    x = fashion_mnist.x_test[:64].astype(np.float32)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, fashion_mnist.y_test[:64], epochs=1, batch_size=32, verbose=0)
    spec = InputSpec(height=28, width=28, channels=1, color="gray")
    bundle, parity = export_bundle(
        model,
        out_dir=tmp_path,
        name="arch-test",
        labels=fashion_mnist.class_names,
        input_spec=spec,
        parity_inputs=x,
        provenance={"data_source": "test", "architecture": name},
    )
    assert parity.max_abs_diff_probs <= 1e-4 and parity.top1_agreement == 1.0
    out = OnnxModel(bundle, ["CPUExecutionProvider"]).run(x[:4])
    assert out.embedding is not None and out.embedding.shape == (4, 16)


@pytest.mark.slow
def test_flip_tta_exports_as_one_flip_invariant_graph(tmp_path: Path, fashion_mnist) -> None:  # type: ignore[no-untyped-def]
    import keras

    from training.architectures import create_model
    from training.export import export_bundle
    from training.tta import has_flip_tta, with_flip_tta

    keras.utils.set_random_seed(1)
    base = create_model("tiny_cnn", (28, 28, 1), 10)
    model = with_flip_tta(base)
    assert has_flip_tta(model) and model.count_params() == base.count_params()
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False)
    x = fashion_mnist.x_test[:32].astype(np.float32)
    np.testing.assert_allclose(np.asarray(again(x)[0]), np.asarray(model(x)[0]), atol=1e-6)
    bundle, parity = export_bundle(
        again,
        out_dir=tmp_path,
        name="tta",
        labels=fashion_mnist.class_names,
        input_spec=InputSpec(height=28, width=28, channels=1, color="gray"),
        parity_inputs=x,
        provenance={"data_source": "test", "architecture": "tiny_cnn"},
    )
    assert parity.max_abs_diff_probs <= 1e-4
    onnx_model = OnnxModel(bundle, ["CPUExecutionProvider"])
    out, mirrored = onnx_model.run(x), onnx_model.run(np.ascontiguousarray(x[:, :, ::-1]))
    np.testing.assert_allclose(out.probs, mirrored.probs, atol=1e-5)
    base_probs = np.asarray(base(x))
    assert not np.allclose(out.probs, base_probs, atol=1e-3)  # the mirror really contributes
