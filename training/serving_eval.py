"""Evaluate a bundle through the serving path (PNG bytes -> app.imaging.prepare -> onnxruntime).

The one way training code runs an ONNX graph: the server's own `app.runtime.OnnxModel`
(`open_model` wraps a graph that is not yet a bundle, e.g. during the parity check or INT8
calibration). TensorFlow-free: needs only the server's dependencies and numpy, so CI can
re-check the committed bundles (scripts/eval-bundles) without installing the training stack.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.bundle import Bundle, BundleMetadata, Metrics, load_bundle, write_bundle
from app.imaging import ImageLimits, prepare
from app.metrics import EvalReport, evaluate_probs
from app.runtime import CPU, OnnxModel
from training.data import (
    ArraySplits,
    BadData,
    data_root,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
)

logger = logging.getLogger(__name__)

SERVING_PATH = "PNG bytes -> app.imaging.prepare -> onnxruntime (CPU)"
PHOTO_PATH = "app.imaging.prepare -> onnxruntime (CPU)"  # image files sent as they are

# metadata metrics.dataset -> loader of the official splits
_LOADERS: dict[str, Callable[[Path | None], ArraySplits]] = {
    "Fashion-MNIST": load_fashion_mnist,
    "MNIST": load_mnist,
    "CIFAR-10": load_cifar10,
}


@dataclass(frozen=True)
class ServingResult:
    report: EvalReport
    probs: npt.NDArray[np.float32]
    seconds: float
    provider: str


def open_model(
    model: Bundle | bytes,
    like: Bundle | None = None,
    *,
    metadata: BundleMetadata | None = None,
    labels: tuple[str, ...] | None = None,
    threads: int = 0,
) -> OnnxModel:
    """An `OnnxModel` (CPU) for a bundle, or for bare ONNX bytes with the I/O contract of
    `like` (or of `metadata` + `labels`): the bytes are staged as a bundle in a temporary
    folder, so they pass the same checks as anything the server loads."""
    if isinstance(model, Bundle):
        return OnnxModel(model, [CPU], intra_op_threads=threads)
    meta = metadata if metadata is not None else (like.metadata if like else None)
    names = labels if labels is not None else (like.labels if like else None)
    if meta is None or names is None:
        raise ValueError("bare ONNX bytes need `like` or `metadata` and `labels`")
    with tempfile.TemporaryDirectory() as tmp:
        staged = write_bundle(Path(tmp) / meta.name, model_bytes=model, metadata=meta, labels=names)
        return OnnxModel(staged, [CPU], intra_op_threads=threads)  # the session holds the graph


def run_prepared(
    model: OnnxModel, x: npt.NDArray[np.float32], batch_size: int = 16
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """(probs, embedding) for inputs already in model form (N x H x W x C float32)."""
    if len(x) == 0:
        return np.zeros((0, model.bundle.metadata.num_classes), np.float32), None
    probs, embs = [], []
    for i in range(0, len(x), batch_size):
        out = model.run(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))
        probs.append(out.probs)
        if out.embedding is not None:
            embs.append(out.embedding)
    return np.concatenate(probs), (np.concatenate(embs) if embs else None)


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    """One H x W x C uint8 image as PNG bytes, as a client would upload it."""
    arr = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def serving_probs(
    model: OnnxModel, images: npt.NDArray[Any], batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """Probabilities for raw uint8 images sent through the server's ingestion and runtime.

    Float arrays are taken as already prepared (image folders are decoded with `prepare`).
    """
    spec = model.bundle.metadata.input
    limits = ImageLimits()
    out: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if chunk.dtype == np.uint8:
            batch = np.stack([prepare(encode_png(img), spec, limits).array for img in chunk])
        else:
            batch = np.asarray(chunk, dtype=np.float32)
        out.append(model.run(batch).probs)
    return (
        np.concatenate(out) if out else np.zeros((0, model.bundle.metadata.num_classes), np.float32)
    )


def evaluate_bundle(
    bundle: Bundle, images: npt.NDArray[Any], labels: npt.NDArray[np.int64]
) -> ServingResult:
    model = OnnxModel(bundle, [CPU])
    t0 = time.perf_counter()
    probs = serving_probs(model, images)
    seconds = time.perf_counter() - t0
    return ServingResult(
        evaluate_probs(labels, probs, bundle.labels), probs, seconds, model.provider
    )


def claimed_test_metrics(meta: BundleMetadata) -> Metrics:
    for m in meta.metrics:
        if m.split == "test" and m.accuracy is not None and m.evaluated_with == "onnxruntime":
            return m
    primary = meta.primary_metrics
    if primary is None or primary.accuracy is None:
        raise BadData(f"{meta.name}: metadata records no test-split accuracy to check against")
    return primary


def official_test_split(meta: BundleMetadata, data_dir: Path | None = None) -> ArraySplits:
    """The data set a bundle's metrics name, from the local data folder."""
    dataset = claimed_test_metrics(meta).dataset
    loader = _LOADERS.get(dataset)
    if loader is None:
        raise BadData(
            f"{meta.name}: no official test split to re-check for data set {dataset!r} "
            f"(known: {', '.join(_LOADERS)}); evaluate it with the scratch, transfer or "
            "pretrained config that built it: python -m training evaluate --bundle DIR "
            "--config CONFIG [--data-dir DIR]; a bundle measured leave-one-style-out "
            "(emoji_head, emoji_top) is re-measured by its run: python -m training train "
            "--config CONFIG --out-dir DIR"
        )
    root = data_dir or data_root()
    folder = {"Fashion-MNIST": "fashion-mnist", "MNIST": "mnist", "CIFAR-10": "cifar-10-batches-py"}
    return loader(root / folder[dataset])


def check_bundles(
    bundle_dirs: list[Path],
    tolerance: float,
    data_dir: Path | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Re-evaluate each bundle on its full test split; ok if accuracy >= claimed - tolerance.

    A bundle with `input.invert: auto` is checked a second time on the same split with every
    image inverted (dark objects on a light background, 255 - x), against the same claim:
    its polarity policy must make that case as good as the original."""
    rows: list[dict[str, Any]] = []
    ok = True
    for directory in bundle_dirs:
        bundle = load_bundle(directory)
        claimed = claimed_test_metrics(bundle.metadata)
        data = official_test_split(bundle.metadata, data_dir)
        if tuple(data.class_names) != bundle.labels:
            raise BadData(f"{bundle.name}: labels differ from {claimed.dataset}'s class names")
        x, y = data.x_test, data.y_test
        if limit is not None:
            x, y = x[:limit], y[:limit]
        variants = [(claimed.dataset, x)]
        if bundle.metadata.input.invert == "auto":
            variants.append((f"{claimed.dataset} inverted", 255 - x))
        for dataset, images in variants:
            result = evaluate_bundle(bundle, images, y)
            acc = result.report.accuracy
            claimed_acc = float(claimed.accuracy or 0.0)
            # Only a full re-run is comparable with the claim.
            passed = acc >= claimed_acc - tolerance if limit is None else True
            ok = ok and passed
            rows.append(
                {
                    "bundle": bundle.name,
                    "dataset": dataset,
                    "n": len(y),
                    "claimed": claimed_acc,
                    "measured": acc,
                    "delta_points": (acc - claimed_acc) * 100,
                    "seconds": result.seconds,
                    "status": ("ok" if passed else "FAIL") if limit is None else "partial",
                }
            )
    return rows, ok


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'bundle':<10} {'dataset':<23} {'n':>6} {'claimed':>8} {'measured':>9} {'delta(pt)':>9} {'time(s)':>8}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['bundle']:<10} {r['dataset']:<23} {r['n']:>6} {r['claimed'] * 100:>7.2f}% "
            f"{r['measured'] * 100:>8.2f}% {r['delta_points']:>+9.2f} {r['seconds']:>8.1f}  {r['status']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training eval-bundles", description=__doc__)
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle folders, e.g. models/digits")
    parser.add_argument("--tolerance-points", type=float, default=0.1)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N test images (no check)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows, ok = check_bundles(args.bundles, args.tolerance_points / 100, args.data_dir, args.limit)
    print(format_table(rows))
    print(f"\nserving path: {SERVING_PATH}; tolerance {args.tolerance_points} points")
    if not ok:
        print("FAILED: a bundle is below the accuracy its metadata claims", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
