"""OnnxModel's load-time checks: what a graph must be before it is served (tiny real graphs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from app.bundle import BundleError
from app.runtime import CPU, OnnxModel
from tests.onnx_graphs import SIDE, graph_bytes, write_tiny_bundle


def _open(tmp_path: Path, model: bytes) -> OnnxModel:
    return OnnxModel(write_tiny_bundle(tmp_path, "tiny", model), [CPU])


def test_a_good_graph_warms_up_and_runs(tmp_path: Path) -> None:
    m = _open(tmp_path, graph_bytes())
    assert m.warm_up(1) > 0
    out = m.run(np.random.default_rng(0).random((3, SIDE, SIDE, 1), dtype=np.float32))
    assert out.probs.shape == (3, 3) and np.allclose(out.probs.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("input_type", [TensorProto.UINT8, TensorProto.FLOAT16])
def test_an_input_that_is_not_float32_is_refused_at_open(tmp_path: Path, input_type: int) -> None:
    with pytest.raises(BundleError, match=r"graph input 'image' is tensor\((uint8|float16)\)"):
        _open(tmp_path, graph_bytes(input_type=input_type))


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (graph_bytes(nan_weights=True), "output 'probs' is not finite"),
        (graph_bytes(softmax=False), "softmax output 'probs' sums to 0, not 1"),
    ],
    ids=["nan", "logits"],
)
def test_outputs_that_cannot_be_probabilities_are_refused_at_warm_up(
    tmp_path: Path, model: bytes, reason: str
) -> None:
    m = _open(tmp_path, model)
    with pytest.raises(BundleError, match=reason):
        m.warm_up(1)
