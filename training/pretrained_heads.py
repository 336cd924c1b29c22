"""The fixed heads of the `pretrained` recipe: what follows the ImageNet softmax, which photos
judge it, and what its card says. `cfg.head` picks one class here, once (HEADS).

`imagenet`: the 1000 classes as they are; the resize policy is chosen on the 20 foolbox ImageNet
photos. `bird`: a fixed layer sums the softmax over the 59 ImageNet bird classes into
[not_bird, bird], with a decision threshold calibrated on the labelled real photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
from PIL import Image

from app.bundle import InputSpec, Metrics, ResizeSpec
from app.card import Section, Table, interval_text, pct
from app.metrics import (
    clopper_pearson_interval,
    max_f1_threshold,
    roc_auc,
    top_k_hits,
)
from app.runtime import OnnxModel
from training import imagenet
from training.config import PretrainedConfig
from training.data import load_images
from training.serving_eval import run_prepared

FOOLBOX_IMAGENET = "foolbox 3.3.4 ImageNet validation-style photos (data/photos/foolbox/imagenet_*)"
PACKAGE_PHOTOS = (
    "real photos shipped in PyPI packages (foolbox imagenet/cifar10/cifar100, "
    "scikit-image, scikit-learn, matplotlib, imgaug)"
)
# Why each resize mode might be preferred (explanations, not measurements).
RESIZE_WHY = {
    "center_crop": "keeps the aspect ratio (the standard ImageNet evaluation protocol), so a "
    "4:3 or 16:9 photo is not squashed; it drops the borders, so an object at the edge of a "
    "wide photo can be cut off",
    "stretch": "keeps the whole picture but squashes a non-square photo",
    "letterbox": "keeps the whole picture and its aspect ratio, padding the rest",
}


def with_resize(spec: InputSpec, mode: str) -> InputSpec:
    resize = spec.resize.model_copy(update={"mode": mode})
    return spec.model_copy(update={"resize": ResizeSpec.model_validate(resize.model_dump())})


def probs_on(
    model: OnnxModel, photos: Sequence[imagenet.LabelledPhoto], spec: InputSpec
) -> npt.NDArray[np.float32]:
    x, kept = load_images([p.path for p in photos], spec)
    if len(kept) != len(photos):
        raise ValueError("an evaluation photo could not be read; re-run scripts/fetch-data")
    return run_prepared(model, x)[0]


def _ci(k: int, n: int) -> str:
    return interval_text(clopper_pearson_interval(k, n))


class Head:
    """One fixed head: labels, the Keras graph after the backbone, evaluation and card text."""

    name = ""

    def __init__(self, cfg: PretrainedConfig, photos_dir: Path | None, models_dir: Path) -> None:
        self.cfg = cfg
        self.photos_dir = photos_dir
        self.models_dir = models_dir

    def labels(self) -> tuple[str, ...]:
        raise NotImplementedError

    def keras_model(self, base: keras.Model) -> keras.Model:
        return base

    def parity_photos(self) -> list[imagenet.LabelledPhoto]:
        return imagenet.bird_photos(self.photos_dir)[::4]

    def choose_resize(self, model: OnnxModel) -> tuple[str, Section, str]:
        """(mode, the card's section about it, a note for the metrics)."""
        raise NotImplementedError

    def evaluate(self, model: OnnxModel, spec: InputSpec, note: str) -> tuple[Metrics, Section]:
        raise NotImplementedError


class ImageNetHead(Head):
    name = "imagenet"

    def labels(self) -> tuple[str, ...]:
        return imagenet.class_names()

    def choose_resize(self, model: OnnxModel) -> tuple[str, Section, str]:
        """Best top-1 wins, ties go to top-5, then to the order in the config. The mean
        probability of the true class is reported but not used: on 20 photos it is noise."""
        photos = imagenet.imagenet_photos(self.photos_dir)
        labels = [p.imagenet_label for p in photos]
        n = len(photos)
        cands = list(self.cfg.resize_candidates)
        scores: dict[str, tuple[int, int, float]] = {}
        for mode in cands:
            probs = probs_on(model, photos, with_resize(self.cfg.input, mode))
            scores[mode] = (
                int(top_k_hits(probs, labels, 1).sum()),
                int(top_k_hits(probs, labels, 5).sum()),
                round(float(np.mean(probs[np.arange(n), labels])), 4),
            )
        best = max(cands, key=lambda m: (scores[m][:2], -cands.index(m)))
        note = ", ".join(
            f"{m}: top-1 {s[0]}/{n}, top-5 {s[1]}/{n}, mean P(true class) {s[2]:.3f}"
            for m, s in scores.items()
        )
        sizes = [Image.open(p.path).size for p in photos]
        not_square = sum(w != h for w, h in sizes)
        text = (
            f"`{best}`: candidates in preference order {', '.join(cands)}; the first with the "
            f"best top-1 (then top-5) on the {n} foolbox ImageNet photos wins ({note}). "
            f"{not_square} of those {n} photos {'is' if not_square == 1 else 'are'} not square, "
            f"so the policies can differ on at most {not_square} of them; on a tie the "
            f"config's order decides. `{best}` {RESIZE_WHY[best]}."
        )
        return best, Section("Resize policy", paragraphs=(text,)), note

    def evaluate(self, model: OnnxModel, spec: InputSpec, note: str) -> tuple[Metrics, Section]:
        photos = imagenet.imagenet_photos(self.photos_dir)
        probs = probs_on(model, photos, spec)
        labels = [p.imagenet_label for p in photos]
        top1, top5 = top_k_hits(probs, labels, 1), top_k_hits(probs, labels, 5)
        names = imagenet.class_names()
        wrong = [
            f"{p.path.name} ({names[p.imagenet_label or 0]}) -> {names[int(r.argmax())]}"
            for p, r, ok in zip(photos, probs, top1, strict=True)
            if not ok
        ]
        n, k1, k5 = len(photos), int(top1.sum()), int(top5.sum())
        metric = Metrics(
            dataset=FOOLBOX_IMAGENET,
            split="test",
            n_samples=n,
            accuracy=k1 / n,
            top5_accuracy=k5 / n,
            notes=f"resize '{spec.resize.mode}' chosen on these same photos ({note}). "
            f"Misses: {'; '.join(wrong)}",
            extra={"top1_correct": float(k1), "top5_correct": float(k5)},
        )
        section = Section(
            "Evaluation",
            bullets=(
                f"top-1 {pct(k1 / n, 1)} ({k1}/{n}), 95% interval {_ci(k1, n)}",
                f"top-5 {pct(k5 / n, 1)} ({k5}/{n}), 95% interval {_ci(k5, n)}",
                f"Top-1 misses (file (true class) -> predicted): {'; '.join(wrong) or 'none'}",
            ),
        )
        return metric, section


class BirdHead(Head):
    name = "bird"

    @property
    def positive(self) -> str:
        return self.cfg.positive_label or "bird"

    def labels(self) -> tuple[str, ...]:
        return (f"not_{self.positive}", self.positive)

    def keras_model(self, base: keras.Model) -> keras.Model:
        """[not_bird, bird] = [1 - sum(p_bird), sum(p_bird)] as a fixed (untrainable) matrix."""
        mask = np.zeros((imagenet.NUM_CLASSES, 2), dtype=np.float32)
        mask[:, 0] = 1.0
        mask[list(imagenet.BIRD_INDICES), 0] = 0.0
        mask[list(imagenet.BIRD_INDICES), 1] = 1.0
        pool = keras.layers.Dense(2, use_bias=False, trainable=False, name="bird_pool")
        outputs = pool(base.output)
        pool.set_weights([mask])
        return keras.Model(base.input, outputs, name="efficientnet_lite0_bird")

    def choose_resize(self, model: OnnxModel) -> tuple[str, Section, str]:
        mode = self.cfg.resize_candidates[0]
        text = f"`{mode}`, the first candidate in the config."
        imagenet_meta = self.models_dir / "imagenet" / "metadata.json"
        if imagenet_meta.is_file():
            from app.bundle import read_metadata

            chosen = read_metadata(imagenet_meta).input.resize.mode
            same = "the same as" if chosen == mode else f"NOT the same as ({chosen})"
            text += f" It is {same} the `imagenet` bundle's choice (see its card)."
        return mode, Section("Resize policy", paragraphs=(text,)), text

    def evaluate(self, model: OnnxModel, spec: InputSpec, note: str) -> tuple[Metrics, Section]:
        photos = imagenet.bird_photos(self.photos_dir)
        scores = probs_on(model, photos, spec)[:, 1].astype(np.float64)
        positive = np.array([p.is_bird for p in photos])
        calib = max_f1_threshold(scores, positive)
        r = calib.validation  # calibrated and measured on the same photos: in-sample
        auc = roc_auc(scores, positive)
        neg_max, pos_min = float(scores[~positive].max()), float(scores[positive].min())
        metric = Metrics(
            dataset=PACKAGE_PHOTOS,
            split="test",
            n_samples=r.n,
            accuracy=r.accuracy,
            precision=r.precision,
            recall=r.recall,
            f1=r.f1,
            threshold=calib.threshold,
            positive_label=self.positive,
            notes=f"{r.n_positive} birds, {r.n_negative} non-birds; threshold calibrated on these "
            f"same photos (in-sample: a tiny sample, not an unbiased estimate). Highest non-bird "
            f"score {neg_max:.3f}, lowest bird score {pos_min:.3f}.",
            extra={k: float(getattr(r, k)) for k in ("tp", "fp", "fn", "tn")}
            | {"n_positive": float(r.n_positive), "n_negative": float(r.n_negative)}
            | {"roc_auc": auc},
        )
        by_group: dict[str, list[int]] = {}
        for i, p in enumerate(photos):
            by_group.setdefault(p.group, []).append(i)
        sources = tuple(
            (g, str(len(ix)), str(int(positive[ix].sum())), f"{scores[ix].max():.3f}")
            for g, ix in by_group.items()
        )
        section = Section(
            "Evaluation",
            bullets=(
                f"threshold **{calib.threshold}** on P({self.positive}) ({calib.rule}); precision "
                f"{pct(r.precision, 1)}, 95% interval {_ci(r.tp, r.tp + r.fp)}; recall "
                f"{pct(r.recall, 1)}, 95% interval {_ci(r.tp, r.tp + r.fn)}; accuracy "
                f"{pct(r.accuracy, 1)} on n={r.n} photos ({r.n_positive} birds)",
                f"ROC AUC {auc:.3f} ({r.n_positive} birds x {r.n_negative} non-birds)",
                f"Highest non-bird score {neg_max:.3f}, lowest bird score {pos_min:.3f}; the "
                "threshold was calibrated on these same photos: a smoke test, not an estimate",
            ),
            tables=(
                Table(
                    ("", f"predicted {self.positive}", f"predicted not_{self.positive}"),
                    (
                        (f"{self.positive} (n={r.n_positive})", str(r.tp), str(r.fn)),
                        (f"not_{self.positive} (n={r.n_negative})", str(r.fp), str(r.tn)),
                    ),
                    caption=f"Confusion matrix at threshold {calib.threshold} (n={r.n}):",
                ),
                Table(
                    ("source", "n", "birds", f"max P({self.positive})"),
                    sources,
                    caption="Scores by source:",
                ),
            ),
        )
        return metric, section


HEADS: dict[str, type[Head]] = {h.name: h for h in (ImageNetHead, BirdHead)}
