"""Turn prepared images into ranked predictions with one batched forward pass."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.imaging import PreparedImage
from app.registry import LoadedModel
from app.schemas import (
    BatchTimings,
    Decision,
    ImageMeta,
    ImageResult,
    ImageTimings,
    Prediction,
)


@dataclass(frozen=True)
class BatchOutcome:
    results: list[ImageResult]
    embeddings: npt.NDArray[np.float32] | None
    timings: BatchTimings


def top_k_predictions(
    probs: npt.NDArray[np.float32], labels: tuple[str, ...], k: int
) -> list[Prediction]:
    k = min(k, probs.shape[0])
    # argsort is stable; ties keep the lower class index first.
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(label=labels[i], index=int(i), score=float(probs[i])) for i in order]


def binary_decision(loaded: LoadedModel, probs: npt.NDArray[np.float32]) -> Decision | None:
    """Apply a binary model's calibrated threshold, when its metadata records one."""
    bundle = loaded.model.bundle
    m = bundle.metadata.primary_metrics
    if m is None or m.threshold is None or m.positive_label is None:
        return None
    if m.positive_label not in bundle.labels or len(bundle.labels) != 2:
        return None
    pos = bundle.labels.index(m.positive_label)
    neg_label = bundle.labels[1 - pos]
    score = float(probs[pos])
    positive = score >= m.threshold
    return Decision(
        label=m.positive_label if positive else neg_label,
        positive_label=m.positive_label,
        positive_score=score,
        threshold=m.threshold,
        is_positive=positive,
    )


def classify(
    loaded: LoadedModel,
    images: list[PreparedImage],
    filenames: list[str | None],
    top_k: int,
) -> BatchOutcome:
    t0 = time.perf_counter()
    batch = np.stack([im.array for im in images]).astype(np.float32, copy=False)
    out = loaded.model.run(batch)
    labels = loaded.model.bundle.labels
    share = out.inference_ms / len(images)
    results: list[ImageResult] = []
    for i, im in enumerate(images):
        info = im.info
        results.append(
            ImageResult(
                filename=filenames[i],
                predictions=top_k_predictions(out.probs[i], labels, top_k),
                decision=binary_decision(loaded, out.probs[i]),
                image=ImageMeta(
                    format=info.format,
                    width=info.width,
                    height=info.height,
                    mode=info.mode,
                    orientation=info.orientation,
                    frames=info.frames,
                    decoded_width=info.decoded_width,
                    decoded_height=info.decoded_height,
                    inverted=info.inverted,
                ),
                timings=ImageTimings(
                    decode_ms=round(im.decode_ms, 3),
                    preprocess_ms=round(im.preprocess_ms, 3),
                    inference_ms=round(share, 3),
                    total_ms=round(im.decode_ms + im.preprocess_ms + share, 3),
                ),
            )
        )
    decode_ms = sum(im.decode_ms for im in images)
    pre_ms = sum(im.preprocess_ms for im in images)
    post_ms = (time.perf_counter() - t0) * 1e3
    timings = BatchTimings(
        decode_ms=round(decode_ms, 3),
        preprocess_ms=round(pre_ms, 3),
        inference_ms=round(out.inference_ms, 3),
        total_ms=round(decode_ms + pre_ms + post_ms, 3),
    )
    return BatchOutcome(results=results, embeddings=out.embedding, timings=timings)
