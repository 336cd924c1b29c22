"""TaughtModel: a head-only bundle served on top of a shared backbone session.

One request = one backbone pass + a tiny head pass; ten taught models on one backbone hold ten
small head sessions, not ten backbones. It offers the same surface as app.runtime.OnnxModel
(`bundle`, `provider`, `input_shape`, `run`, `warm_up`), so predict and catalogs need no change.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.bundle import Bundle, BundleError, TensorInfo, check_io
from app.runtime import ModelOutput, OnnxModel

CPU = "CPUExecutionProvider"


class TaughtModel:
    """A verified taught bundle bound to the loaded backbone it names (name and sha256)."""

    def __init__(self, bundle: Bundle, backbone: OnnxModel) -> None:
        ref = bundle.metadata.backbone
        if ref is None:
            raise BundleError(f"{bundle.name}: not a taught bundle (no backbone)")
        served = backbone.bundle.metadata
        if served.artifact.sha256 != ref.sha256:
            raise BundleError(
                f"{bundle.name}: taught on backbone {ref.name!r} sha256 {ref.sha256[:12]}..., "
                f"but {served.name!r} is now sha256 {served.artifact.sha256[:12]}...; teach it again"
            )
        if served.outputs.embedding is None or served.outputs.embedding.dim != ref.dim:
            raise BundleError(f"{bundle.name}: backbone {ref.name!r} has no {ref.dim}-d embedding")
        if served.input != bundle.metadata.input:
            raise BundleError(f"{bundle.name}: input spec differs from backbone {ref.name!r}")
        self.bundle = bundle
        self.backbone = backbone
        opts = ort.SessionOptions()
        # The head is a d x C MatMul: one thread, no arena, so each costs well under a MB.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(bundle.model_path), sess_options=opts, providers=[CPU]
            )
        except Exception as exc:  # onnxruntime raises untyped errors for bad graphs
            raise BundleError(f"{bundle.name}: onnxruntime cannot load the head: {exc}") from exc
        inputs = [TensorInfo(i.name, tuple(i.shape)) for i in self.session.get_inputs()]
        outputs = [TensorInfo(o.name, tuple(o.shape)) for o in self.session.get_outputs()]
        check_io(bundle.metadata, inputs, outputs)
        self.provider: str = backbone.provider
        self._emb_name = inputs[0].name
        self._probs_name = bundle.metadata.outputs.probs.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.backbone.input_shape

    @property
    def batch_policy(self) -> object:
        """The backbone's measured batching policy: the backbone is what a batch costs."""
        return getattr(self.backbone, "batch_policy", None)

    def run(self, batch: npt.NDArray[np.float32]) -> ModelOutput:
        """Backbone once (its embedding is also the served embedding), then the head."""
        t0 = time.perf_counter()
        out = self.backbone.run(batch)
        if out.embedding is None:  # checked at load; kept for the type checker
            raise BundleError(f"{self.bundle.name}: backbone returned no embedding")
        (probs,) = self.session.run([self._probs_name], {self._emb_name: out.embedding})
        ms = (time.perf_counter() - t0) * 1e3
        return ModelOutput(
            probs=np.asarray(probs, dtype=np.float32), embedding=out.embedding, inference_ms=ms
        )

    def warm_up(self, runs: int) -> float:
        t0 = time.perf_counter()
        dim = self.bundle.metadata.backbone.dim if self.bundle.metadata.backbone else 1
        zeros = np.ones((1, dim), dtype=np.float32)
        for _ in range(max(runs, 1)):
            self.session.run([self._probs_name], {self._emb_name: zeros})
        return (time.perf_counter() - t0) * 1e3
