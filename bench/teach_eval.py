"""Held-out accuracy of taught heads on pictures in a drawing style they were not taught on,
next to the Keras transfer recipe's head on the same split.

Data: openly licensed emoji art (scripts/fetch-data), Noto and Twemoji styles, default skin tone
unless a task says otherwise; features = the shipped `imagenet` bundle's embedding (EfficientNet-
Lite0, ImageNet weights), cached by training/emoji/embed.py. Two folds per task: teach on one
style, test on the other (different artists drawing the same things); n = both test styles.
  * ours: app.teach.core.train (the server's teach path: validated L2, class weights)
  * keras: training/transfer_head.train_head with santa.yaml's head settings (the offline Keras
    transfer recipe with its backbone frozen, as that config ships), early stopping on a
    stratified 20% of the teaching style, same embeddings

Usage: .venv/bin/python -m bench.teach_eval
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from app.metrics import wilson_interval
from app.teach.core import train
from app.teach.examples import Examples
from app.teach.head import unit
from app.teach.validate import stratified_holdout
from training.emoji.catalog import Picture, load_catalog
from training.emoji.embed import Backbone, style_features

STYLES = ("noto", "twemoji")
SUBCATEGORIES = (
    "animal-mammal",
    "animal-bird",
    "food-fruit",
    "food-prepared",
    "transport-ground",
    "sky & weather",
    "clothing",
    "sport",
)
SANTA_NEGATIVE = ("person-role", "person-fantasy", "family")


def subcategory_task(p: Picture) -> str | None:
    return p.subcategory if p.tone == 0 and p.subcategory in SUBCATEGORIES else None


def santa_task(p: Picture) -> str | None:
    if p.is_santa:
        return "santa"
    return "not santa" if p.tone == 0 and p.subcategory in SANTA_NEGATIVE else None


def keras_head(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, c: int) -> np.ndarray:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras

    from training.recipes import load_config
    from training.transfer_head import train_head

    cfg = load_config("training/configs/santa.yaml")
    keras.utils.set_random_seed(cfg.seed)
    fit, val = stratified_holdout(y_tr, 0.2, np.random.default_rng(0))
    head, _ = train_head(cfg, x_tr[fit], y_tr[fit], x_tr[val], y_tr[val], c)
    predicted: npt.NDArray[np.intp] = np.argmax(np.asarray(head.predict(x_te, verbose=0)), axis=1)
    return predicted


def run_task(name: str, task: Callable[[Picture], str | None], backbone: Backbone) -> None:
    pictures = load_catalog(styles=STYLES)
    per_style = {}
    for style in STYLES:
        pics = [p for p in pictures if p.style == style and task(p) is not None]
        feats = style_features(pics, style, "base", backbone)
        per_style[style] = (feats.emb, [task(p) for p in pics])
    labels = tuple(sorted({lab for _, labs in per_style.values() for lab in labs if lab}))
    index = {lab: i for i, lab in enumerate(labels)}
    hits = {"ours": 0, "keras": 0}
    n = 0
    secs = 0.0
    own = []
    for teach_style, test_style in (STYLES, STYLES[::-1]):
        x_tr, lab_tr = per_style[teach_style]
        x_te, lab_te = per_style[test_style]
        y_tr = np.array([index[v] for v in lab_tr if v], np.int64)
        y_te = np.array([index[v] for v in lab_te if v], np.int64)
        t0 = time.perf_counter()
        trained = train(Examples(unit(x_tr), y_tr, labels, 0), dataset=f"emoji {teach_style}")
        secs += time.perf_counter() - t0
        own.append((trained.report.accuracy, trained.report.n_samples))
        hits["ours"] += int((trained.head.predict_proba(unit(x_te)).argmax(1) == y_te).sum())
        hits["keras"] += int((keras_head(x_tr, y_tr, x_te, len(labels)) == y_te).sum())
        n += len(y_te)
    print(f"\n## {name}: {len(labels)} classes ({', '.join(labels)})")
    print(f"teach on one style, test on the other ({' <-> '.join(STYLES)}), n = {n} test pictures")
    print("| head | held-out accuracy | 95% Wilson | right / n |")
    print("|---|---|---|---|")
    for who, k in hits.items():
        ci = wilson_interval(k, n)
        label = "ours (app/teach)" if who == "ours" else "Keras transfer recipe head"
        print(f"| {label} | {k / n:.3f} | {ci.low:.3f}-{ci.high:.3f} | {k} / {n} |")
    est = ", ".join(f"{a:.3f} (n={m})" for a, m in own)
    print(f"our own validation estimate inside the teaching style: {est}; fit {secs:.1f} s")


def main() -> None:
    backbone = Backbone()
    run_task("Emoji subcategories", subcategory_task, backbone)
    run_task("Santa vs not Santa (people emoji)", santa_task, backbone)


if __name__ == "__main__":
    main()
