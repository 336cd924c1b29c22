"""Keras -> ONNX (input `image`, outputs `probs` + `embedding`), parity check, bundle writing."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import tensorflow as tf
import tf2onnx

from app.bundle import (
    EMBEDDING_NAME,
    INPUT_NAME,
    PROBS_NAME,
    Artifact,
    Bundle,
    BundleMetadata,
    EmbeddingOutput,
    InputSpec,
    Metrics,
    Outputs,
    ProbsOutput,
    Provenance,
    utc_now,
)
from app.bundle_write import write_bundle
from training.recipes import CommandError

logger = logging.getLogger(__name__)


class ExportError(CommandError):
    """The exported graph is not a faithful, single-input copy of the Keras model."""


@dataclass(frozen=True)
class ParityReport:
    n_samples: int
    max_abs_diff_probs: float
    max_abs_diff_embedding: float
    top1_agreement: float


def serving_model(model: keras.Model, embedding_layer: str = "embedding") -> keras.Model:
    """Wrap a classifier into a Functional model with named outputs {probs, embedding}."""
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs)  # tf2onnx cannot convert Sequential
    probs = keras.layers.Identity(name=f"{PROBS_NAME}_out")(model.outputs[0])
    emb = keras.layers.Identity(name=f"{EMBEDDING_NAME}_out")(
        model.get_layer(embedding_layer).output
    )
    return keras.Model(model.inputs, {PROBS_NAME: probs, EMBEDDING_NAME: emb}, name="serving")


def to_onnx(model: keras.Model, spec: InputSpec, opset: int = 17) -> bytes:
    """Convert with tf2onnx and check the graph's interface."""
    signature = [
        tf.TensorSpec((None, spec.height, spec.width, spec.channels), tf.float32, name=INPUT_NAME)
    ]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    _rename_outputs(
        proto, {f"{PROBS_NAME}_out": PROBS_NAME, f"{EMBEDDING_NAME}_out": EMBEDDING_NAME}
    )
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    # Normalization layers exported the wrong way show up as extra graph inputs.
    if inputs != [INPUT_NAME]:
        raise ExportError(f"exported graph has inputs {inputs}; expected exactly [{INPUT_NAME!r}]")
    outputs = sorted(o.name for o in proto.graph.output)
    if outputs != sorted([PROBS_NAME, EMBEDDING_NAME]):
        raise ExportError(f"exported graph has outputs {outputs}; expected probs and embedding")
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def _rename_outputs(proto: onnx.ModelProto, names: dict[str, str]) -> None:
    """Give graph outputs their contract names through ONNX Identity nodes.

    Keras layer names must be unique, and architectures already own a layer called
    `embedding`, so the wrapper's layers carry a suffix that is removed here.
    """
    for out in proto.graph.output:
        new = names.get(out.name)
        if new is None:
            continue
        proto.graph.node.append(onnx.helper.make_node("Identity", [out.name], [new], name=new))
        out.name = new


def check_parity(
    model: keras.Model,
    onnx_bytes: bytes,
    inputs: npt.NDArray[np.float32],
    atol: float,
    metadata: BundleMetadata,
    labels: Sequence[str],
) -> ParityReport:
    """Compare onnxruntime (through the server's runtime, app.runtime.OnnxModel) with Keras on
    real inputs; raise ExportError beyond `atol`."""
    from training.serving_eval import open_model, run_prepared

    ort_probs, ort_emb = run_prepared(
        open_model(onnx_bytes, metadata=metadata, labels=tuple(labels)), inputs, len(inputs)
    )
    assert ort_emb is not None  # every exported graph has an embedding output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "structure of inputs" for a named input
        keras_out = model(inputs, training=False)
    k_probs = np.asarray(keras_out[PROBS_NAME])
    k_emb = np.asarray(keras_out[EMBEDDING_NAME])
    report = ParityReport(
        n_samples=len(inputs),
        max_abs_diff_probs=float(np.max(np.abs(k_probs - ort_probs))),
        max_abs_diff_embedding=float(np.max(np.abs(k_emb - ort_emb))),
        top1_agreement=float(np.mean(k_probs.argmax(1) == ort_probs.argmax(1))),
    )
    worst = max(report.max_abs_diff_probs, report.max_abs_diff_embedding)
    if not np.isfinite(worst) or worst > atol:
        raise ExportError(
            f"onnxruntime differs from Keras by {worst:.2e} (> {atol:.0e}) on {len(inputs)} "
            "real inputs; refusing to write the bundle"
        )
    return report


def library_versions() -> dict[str, str]:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs"


def export_bundle(
    model: keras.Model,
    *,
    out_dir: Path,
    name: str,
    labels: Sequence[str],
    input_spec: InputSpec,
    parity_inputs: npt.NDArray[np.float32],
    provenance: dict[str, Any],
    description: str = "",
    metrics: Sequence[Metrics] = (),
    version: str = "1",
    opset: int = 17,
    atol: float = 1e-4,
    model_card: str | None = None,
    embedding_layer: str = "embedding",
    onnx_bytes: bytes | None = None,
) -> tuple[Bundle, ParityReport]:
    """Export `model` (a trained classifier) as the bundle ``out_dir/name``.

    `parity_inputs` must be real images already in the model's input form (N x H x W x C
    float32, e.g. a slice of the test split). Nothing is written unless parity holds.
    `onnx_bytes` reuses an earlier conversion of the same model (tf2onnx output is not
    byte-stable between calls), so that a bundle evaluated in staging can be shipped unchanged;
    it is parity-checked like a fresh conversion.
    """
    serving = serving_model(model, embedding_layer)
    probs_dim = int(serving.output[PROBS_NAME].shape[-1])
    emb_dim = int(serving.output[EMBEDDING_NAME].shape[-1])
    if probs_dim != len(labels):
        raise ExportError(f"model has {probs_dim} classes but {len(labels)} labels were given")
    if onnx_bytes is None:
        onnx_bytes = to_onnx(serving, input_spec, opset)
    inputs = np.ascontiguousarray(parity_inputs, dtype=np.float32)
    expected_shape = (input_spec.height, input_spec.width, input_spec.channels)
    if inputs.ndim != 4 or inputs.shape[1:] != expected_shape:
        raise ExportError(f"parity inputs have shape {inputs.shape}; expected N x {expected_shape}")
    prov = {
        "library_versions": library_versions(),
        "git_commit": git_commit(),
        "hardware": hardware(),
        **provenance,
        "opset": opset,
    }
    metadata = BundleMetadata(
        name=name,
        version=version,
        created_at=utc_now(),
        description=description,
        input=input_spec,
        outputs=Outputs(
            probs=ProbsOutput(kind="softmax"),
            embedding=EmbeddingOutput(dim=emb_dim, l2_normalized=False),
        ),
        num_classes=len(labels),
        metrics=list(metrics),
        provenance=Provenance.model_validate(prov),
        # Placeholder; write_bundle recomputes hash and size from the bytes it writes.
        artifact=Artifact(sha256="0" * 64, bytes=len(onnx_bytes)),
    )
    report = check_parity(serving, onnx_bytes, inputs, atol, metadata, labels)
    logger.info(
        "parity on %d inputs: probs %.2e, embedding %.2e, top-1 agreement %.4f",
        report.n_samples,
        report.max_abs_diff_probs,
        report.max_abs_diff_embedding,
        report.top1_agreement,
    )
    bundle = write_bundle(
        out_dir / name,
        model_bytes=onnx_bytes,
        metadata=metadata,
        labels=list(labels),
        model_card=model_card,
    )
    return bundle, report
