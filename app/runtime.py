"""OnnxModel: one onnxruntime session per bundle, honest provider choice and reporting."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.bundle import Bundle, BundleError, TensorInfo, check_io
from app.errors import ConfigurationError

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def choose_providers(setting: str) -> list[str]:
    """Map the `providers` setting onto an explicit onnxruntime provider list."""
    available = available_providers()
    if setting == "cpu":
        return [CPU]
    if setting == "cuda":
        if CUDA not in available:
            raise ConfigurationError(
                "IMGCLASS_PROVIDERS=cuda but this onnxruntime build has no CUDA provider "
                f"(available: {', '.join(available)}). Install onnxruntime-gpu on a machine "
                "with an NVIDIA GPU, or use 'auto' or 'cpu'."
            )
        return [CUDA, CPU]
    if setting == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise ConfigurationError(f"unknown providers setting {setting!r}; use auto, cpu or cuda")


@dataclass(frozen=True)
class ModelOutput:
    probs: npt.NDArray[np.float32]  # N x num_classes
    embedding: npt.NDArray[np.float32] | None  # N x dim
    inference_ms: float


@dataclass(frozen=True)
class BatchPolicy:
    """How many images one onnxruntime call may gather, and how long a worker waits for them."""

    max_batch: int
    max_wait_ms: float
    reason: str
    measured: tuple[tuple[int, float], ...] = ()  # (batch size, ms per image) at warm-up

    def describe(self) -> str:
        if self.max_batch <= 1:
            return f"no batching ({self.reason})"
        if self.max_wait_ms <= 0:
            return f"batches of up to {self.max_batch} from requests already queued ({self.reason})"
        return f"batches of up to {self.max_batch}, wait <= {self.max_wait_ms:g} ms ({self.reason})"


# Batching is adopted when the best batch cuts the forward pass's time per image by at least 5%
# (TAKE_GAIN). A worker then gathers only requests already queued and never waits for more, so a
# lone request is not delayed and batches form only under load, where they save time: `products`
# (a 0.9 ms forward pass) measured 0.90-0.95x per image at batch 4-8 in the model alone and
# +12% req/s at 8 clients over HTTP, where fewer onnxruntime calls and thread hand-offs add to
# the gain. Waiting up to one batch-1 pass for batch-mates is worth it only at a gain of 15% or
# more (WAIT_GAIN: a GPU). On one CPU thread EfficientNet-Lite0 gains little or nothing (168 ->
# 157 img/s at batch 8 in pure onnxruntime), so it usually does not batch; where a start measures
# a gain, the take-only policy was neutral over HTTP (docs/performance.md).
TAKE_GAIN = 0.95
# Larger batches (a client's own 32-image request) run in slices of this size (or the batch
# policy's, if larger) on the CPU. 32 images, one ORT thread, in-process, two runs each (round
# 37): imagenet 310-356 ms in slices of 4 against 384-399 in 8, bird 363-377 against 416-456,
# santa 352-359 against 435-484; a slice of 8 added 17-24 MiB to the process, of 4, 5.
SLICE_BATCH = 4
WAIT_GAIN = 0.85


def measure_batch_policy(
    model: OnnxModel,
    candidates: tuple[int, ...] = (2, 4, 8),
    rounds: int = 2,
    budget_s: float = 0.15,
    max_rounds: int = 50,
) -> BatchPolicy:
    """Time batch 1 against larger batches on this session (its provider and thread count)
    and keep the size with the lowest time per image, if it beats batch 1 clearly.

    The sizes run in interleaved rounds (1, 2, 4, 8, 1, 2, ...): at least `rounds` and, while
    within `budget_s`, up to `max_rounds`; each size's fastest run counts (the least disturbed
    by other processes on these cores). Interleaving gives every size the same number of runs
    over the same stretch of time, so a neighbour's burst, or the minimum of many short runs
    against few long ones, does not decide for or against batching. A size whose first run
    takes over 250 ms is dropped with every larger one (no use as a latency budget)."""
    zeros = {1: np.zeros((1, *model.input_shape), dtype=np.float32)}
    model.run(zeros[1])
    for b in candidates:
        batch = np.zeros((b, *model.input_shape), dtype=np.float32)
        if model.run(batch).inference_ms > 250:  # the first run at a new shape also allocates
            break
        zeros[b] = batch
    sizes = list(zeros)
    fastest = dict.fromkeys(sizes, float("inf"))
    until = time.perf_counter() + budget_s
    done = 0
    while done < rounds or (done < max_rounds and time.perf_counter() < until):
        for b in sizes:
            fastest[b] = min(fastest[b], model.run(zeros[b]).inference_ms)
        done += 1
    table = [(b, fastest[b] / b) for b in sizes]
    one = table[0][1]
    best_b, best = min(table, key=lambda row: row[1])
    measured = tuple((b, round(ms, 3)) for b, ms in table)
    if best_b == 1 or best > TAKE_GAIN * one:
        return BatchPolicy(
            1, 0.0, f"measured: batching gains < {1 - TAKE_GAIN:.0%} per image", measured
        )
    reason = f"measured: batch {best_b} takes {best / one:.2f}x the time per image"
    if best > WAIT_GAIN * one:
        return BatchPolicy(best_b, 0.0, reason, measured)
    # Waiting for batch-mates costs latency; never wait longer than one batch-1 run.
    wait = round(min(5.0, max(0.5, one)), 2)
    return BatchPolicy(best_b, wait, reason, measured)


def check_outputs(bundle: Bundle, out: ModelOutput) -> None:
    """Refuse a graph whose warm-up answer cannot be right: NaN/inf (broken weights; every
    image would get an empty ranking with 200) or `probs` that are not probabilities (logits
    exported without the softmax would be served as scores like 74.9)."""
    for name, arr in (("probs", out.probs), ("embedding", out.embedding)):
        if arr is not None and not np.isfinite(arr).all():
            raise BundleError(
                f"{bundle.name}: output {name!r} is not finite (NaN or inf) for a blank "
                "input; the graph or its weights are broken"
            )
    probs, kind = out.probs, bundle.metadata.outputs.probs.kind
    if probs.min() < -1e-4 or probs.max() > 1 + 1e-4:
        raise BundleError(
            f"{bundle.name}: output 'probs' has values in [{probs.min():.3g}, {probs.max():.3g}] "
            f"for a blank input, not {kind} probabilities in [0, 1] (logits without the {kind}?)"
        )
    sums = probs.sum(axis=1)
    if kind == "softmax" and np.abs(sums - 1).max() > 1e-3:
        raise BundleError(
            f"{bundle.name}: softmax output 'probs' sums to {sums.min():.4g}, not 1, for a "
            "blank input (metadata says softmax; use kind 'sigmoid' for independent scores)"
        )


class OnnxModel:
    """A verified bundle with a live inference session."""

    def __init__(self, bundle: Bundle, providers: list[str], intra_op_threads: int = 0) -> None:
        self.bundle = bundle
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # No arena on the CPU: forward passes allocate from the process allocator (jemalloc by
        # default, app.allocator), which hands freed memory back, so warm-up's larger batches
        # need no shrinking run after them. Memory and speed measured the same as with the
        # arena and that run (docs/hardening.md, "Measured: peak memory").
        opts.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(
                str(bundle.model_path), sess_options=opts, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise BundleError(f"{bundle.name}: onnxruntime cannot load the model: {exc}") from exc
        active = list(self.session.get_providers())
        if providers[0] == CUDA and active[0] != CUDA:
            raise ConfigurationError(
                f"{bundle.name}: CUDA was requested but onnxruntime fell back to {active[0]}"
            )
        self.provider: str = active[0]
        self.intra_op_threads = intra_op_threads
        self.batch_policy = BatchPolicy(1, 0.0, "not measured (no warm-up)")
        inputs = [TensorInfo(i.name, tuple(i.shape)) for i in self.session.get_inputs()]
        outputs = [TensorInfo(o.name, tuple(o.shape)) for o in self.session.get_outputs()]
        check_io(bundle.metadata, inputs, outputs)
        in_type = self.session.get_inputs()[0].type
        if in_type != "tensor(float)":  # the server feeds float32 (InputSpec.dtype)
            raise BundleError(
                f"{bundle.name}: graph input {inputs[0].name!r} is {in_type}, "
                "the bundle contract feeds tensor(float) (float32)"
            )
        meta = bundle.metadata
        self._input_name = meta.input.name
        self._output_names = [meta.outputs.probs.name]
        if meta.outputs.embedding is not None:
            self._output_names.append(meta.outputs.embedding.name)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        spec = self.bundle.metadata.input
        return (spec.height, spec.width, spec.channels)

    def run(self, batch: npt.NDArray[np.float32]) -> ModelOutput:
        """Run a N x H x W x C float32 batch."""
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise ValueError(f"batch shape {batch.shape} does not match {self.input_shape}")
        t0 = time.perf_counter()
        # A batch larger than the scheduler forms (a client's 32-image request) runs in slices
        # of `keep` on the CPU: imagenet, 32 images, 270-300 ms instead of 300-410 (batches gain
        # nothing there), and its activations never take more than one slice's memory (see
        # SLICE_BATCH).
        keep = max(SLICE_BATCH, self.batch_policy.max_batch)
        step = keep if self.provider != CUDA else batch.shape[0]
        parts: list[list[npt.NDArray[np.float32]]] = []
        for start in range(0, batch.shape[0], step):
            feed = {self._input_name: batch[start : start + step]}
            results = self.session.run(self._output_names, feed)
            parts.append([np.asarray(r, dtype=np.float32) for r in results])
        ms = (time.perf_counter() - t0) * 1e3
        outs = (
            parts[0] if len(parts) == 1 else [np.concatenate(p) for p in zip(*parts, strict=True)]
        )
        return ModelOutput(
            probs=outs[0], embedding=outs[1] if len(outs) > 1 else None, inference_ms=ms
        )

    def warm_up(self, runs: int) -> float:
        """Run zero batches so the first request does not pay for lazy initialisation, then
        choose the batch policy by measurement (when runs > 0)."""
        t0 = time.perf_counter()
        zeros = np.zeros((1, *self.input_shape), dtype=np.float32)
        for _ in range(runs):
            out = self.run(zeros)
        if runs > 0:
            check_outputs(self.bundle, out)
            sizes = (2, 4, 8, 16, 32) if self.provider == CUDA else (2, 4, 8)
            self.batch_policy = measure_batch_policy(self, sizes)
            logger.info("%s: %s", self.bundle.name, self.batch_policy.describe())
        return (time.perf_counter() - t0) * 1e3
