"""training/export.py: nothing is written unless onnxruntime reproduces Keras on real inputs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from app.bundle import InputSpec, load_bundle
from training.architectures import create_model
from training.export import ExportError, export_bundle, serving_model, to_onnx

SPEC = InputSpec(height=28, width=28, channels=1, color="gray")
PROVENANCE = {"data_source": "Fashion-MNIST test images", "architecture": "tiny_cnn"}


def _tiny(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return create_model("tiny_cnn", (28, 28, 1), 3)


def test_a_graph_that_differs_from_keras_is_refused_and_nothing_is_written(
    tmp_path: Path, fashion_mnist
) -> None:  # type: ignore[no-untyped-def]
    """Parity was asserted by no test: the graph of another network (same shapes) must be
    refused on real images, and the same model's own graph written."""
    model, other = _tiny(1), _tiny(2)
    x = np.asarray(fashion_mnist.x_test[:16], np.float32)
    labels = ["a", "b", "c"]
    kw = {"name": "t", "labels": labels, "input_spec": SPEC, "provenance": PROVENANCE}
    wrong = to_onnx(serving_model(other), SPEC)
    with pytest.raises(ExportError, match=r"differs from Keras by .* refusing to write"):
        export_bundle(model, out_dir=tmp_path, parity_inputs=x, onnx_bytes=wrong, **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "t").exists()
    bundle, report = export_bundle(model, out_dir=tmp_path, parity_inputs=x, **kw)  # type: ignore[arg-type]
    assert report.n_samples == 16 and report.max_abs_diff_probs <= 1e-4
    assert load_bundle(tmp_path / "t").metadata.artifact.sha256 == bundle.metadata.artifact.sha256
