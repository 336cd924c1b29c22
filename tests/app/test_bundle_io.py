"""check_io: a graph's tensors against the metadata (names, shapes, a dynamic batch)."""

from __future__ import annotations

import pytest

from app.bundle_io import BundleError, TensorInfo, check_io
from tests.onnx_graphs import DIM, LABELS, SIDE, metadata

OUTPUTS = [TensorInfo("probs", ("N", len(LABELS))), TensorInfo("embedding", ("N", DIM))]


def test_dynamic_batch_passes_and_a_fixed_batch_is_refused() -> None:
    meta = metadata("tiny")
    check_io(meta, [TensorInfo("image", ("N", SIDE, SIDE, 1))], OUTPUTS)
    check_io(meta, [TensorInfo("image", (None, SIDE, SIDE, 1))], OUTPUTS)
    with pytest.raises(BundleError, match="fixed batch size 1; export it with a dynamic"):
        check_io(meta, [TensorInfo("image", (1, SIDE, SIDE, 1))], OUTPUTS)


def test_dynamic_height_and_width_are_refused() -> None:
    with pytest.raises(BundleError, match=r"shape \('N', 'h', 'w', 1\)"):
        check_io(metadata("tiny"), [TensorInfo("image", ("N", "h", "w", 1))], OUTPUTS)
