"""Tiny real ONNX graphs and bundles built with onnx.helper (no Keras: milliseconds to make),
for contract tests that need many variants of a servable bundle."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from app.bundle import (
    Artifact,
    Bundle,
    BundleMetadata,
    EmbeddingOutput,
    InputSpec,
    Outputs,
    Provenance,
    utc_now,
)
from app.bundle_write import write_bundle

SIDE = 8
DIM = 4
LABELS = ("cat", "dog", "eel")


def graph_bytes(
    *,
    input_name: str = "image",
    input_shape: Sequence[int | str] = ("N", SIDE, SIDE, 1),
    classes: int = len(LABELS),
    nan_weights: bool = False,
    input_type: int = TensorProto.FLOAT,
    softmax: bool = True,
) -> bytes:
    """image (N x 8 x 8 x 1) -> flatten -> embedding (N x 4) -> softmax probs (N x classes).

    `input_type` other than FLOAT casts the input to float first; `softmax=False` exports the
    logits as "probs" (a classic export mistake)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(SIDE * SIDE, DIM)).astype(np.float32)
    w2 = rng.normal(size=(DIM, classes)).astype(np.float32)
    if nan_weights:
        w2[:] = np.nan
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array([-1, SIDE * SIDE], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Reshape", [input_name, "shape"], ["flat0"]),
        helper.make_node("Cast", ["flat0"], ["flat"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["flat", "w1"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)
        if softmax
        else helper.make_node("Identity", ["logits"], ["probs"]),
    ]
    inputs = [helper.make_tensor_value_info(input_name, input_type, list(input_shape))]
    outputs = [
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes]),
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", DIM]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    return bytes(model.SerializeToString())


def metadata(name: str) -> BundleMetadata:
    return BundleMetadata(
        name=name,
        created_at=utc_now(),
        description="tiny onnx.helper graph (test)",
        input=InputSpec(height=SIDE, width=SIDE, channels=1, color="gray"),
        outputs=Outputs(embedding=EmbeddingOutput(dim=DIM)),
        num_classes=len(LABELS),
        provenance=Provenance(data_source="none (random weights)", architecture="mlp", opset=17),
        artifact=Artifact(sha256="0" * 64, bytes=1),  # write_bundle sets the real ones
    )


def write_tiny_bundle(root: Path, name: str, model: bytes | None = None) -> Bundle:
    """A valid bundle `root/name` (write_bundle: real hash and size)."""
    return write_bundle(
        root / name, model_bytes=model or graph_bytes(), metadata=metadata(name), labels=LABELS
    )


def replace_model(bundle_dir: Path, model: bytes) -> None:
    """Swap model.onnx and update the recorded hash and size (so only the graph is wrong)."""
    (bundle_dir / "model.onnx").write_bytes(model)
    path = bundle_dir / "metadata.json"
    raw = json.loads(path.read_text())
    raw["artifact"].update(sha256=hashlib.sha256(model).hexdigest(), bytes=len(model))
    path.write_text(json.dumps(raw))
