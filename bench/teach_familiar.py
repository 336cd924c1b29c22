"""Does a taught model's `familiar: false` (app/teach/familiar.py) flag pictures unlike what it
was taught, and leave alone pictures like them?

Data: openly licensed emoji art (scripts/fetch-data), default skin tone; features = the shipped
`imagenet` bundle's embedding through onnxruntime (training/emoji/embed.py, cached). The model
is taught, with the server's own code (app.teach.core.train), on a stratified 80% of one style's
pictures of eight subcategories (SUBCATEGORIES of bench/teach_eval.py); its floor is computed
from those examples as the server computes it. Each query is flagged when its nearest taught
example is less alike than the floor, as predict?similar=k does against the model's catalog.
Rows (each with n and a 95% Wilson interval):
  * taught classes: the other 20% of the teaching style (like the examples: about 1% by
    construction), and every picture of those subcategories in the other style;
  * untaught classes: every other subcategory, in the teaching style and in the other style;
  * photos: the project's labelled photos (training.imagenet.bird_photos).
Both ways round (teach Noto, then Twemoji). Also: how often the head's answer is right among
flagged and unflagged pictures of taught classes.

Usage: .venv/bin/python -m bench.teach_familiar   (first run embeds ~7,000 pictures: minutes)
"""

from __future__ import annotations

import numpy as np

from app.metrics import wilson_interval
from app.teach.core import train
from app.teach.examples import Examples
from app.teach.familiar import FLOOR_QUANTILE, familiar_floor, unit_rows
from app.teach.validate import stratified_holdout
from bench.teach_eval import STYLES, SUBCATEGORIES
from training.emoji.catalog import load_catalog
from training.emoji.embed import Backbone, photo_features, style_features


def nearest(queries: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """Each query's cosine similarity to its nearest example (rows of any length)."""
    q, x = unit_rows(queries), unit_rows(examples)
    return np.concatenate([(q[i : i + 512] @ x.T).max(axis=1) for i in range(0, len(q), 512)])


def row(name: str, flagged: np.ndarray) -> None:
    k, n = int(flagged.sum()), len(flagged)
    ci = wilson_interval(k, n)
    print(f"| {name} | {k / n:.3f} | {ci.low:.3f}-{ci.high:.3f} | {k} / {n} |")


def main() -> None:
    backbone = Backbone()
    pictures = [p for p in load_catalog(styles=STYLES) if p.tone == 0]
    feats, subs = {}, {}
    for style in STYLES:
        pics = [p for p in pictures if p.style == style]
        feats[style] = style_features(pics, style, "base", backbone).emb
        subs[style] = np.array([p.subcategory for p in pics])
    photos = photo_features(backbone)[0].emb
    labels = tuple(sorted(SUBCATEGORIES))
    index = {lab: i for i, lab in enumerate(labels)}
    print(f"floor = the {FLOOR_QUANTILE:.0%} quantile of the examples' nearest-other similarity")
    for teach_style, other in (STYLES, STYLES[::-1]):
        taught = np.isin(subs[teach_style], labels)
        x_all, sub_all = feats[teach_style][taught], subs[teach_style][taught]
        y_all = np.array([index[s] for s in sub_all], np.int64)
        keep, held = stratified_holdout(y_all, 0.2, np.random.default_rng(0))
        x, y = x_all[keep], y_all[keep]
        trained = train(Examples(unit_rows(x), y, labels, 0), dataset=f"emoji {teach_style}")
        floor = familiar_floor(x)
        assert floor is not None
        print(f"\n## taught on {teach_style} ({len(y)} pictures, {len(labels)} subcategories)")
        print(f"floor {floor:.3f}; flagged = nearest taught example below it")
        print("| queries | flagged | 95% Wilson | flagged / n |")
        print("|---|---|---|---|")
        other_taught = np.isin(subs[other], labels)
        queries = {
            f"taught classes, held-out {teach_style}": (x_all[held], y_all[held]),
            f"taught classes, {other}": (
                feats[other][other_taught],
                np.array([index[s] for s in subs[other][other_taught]], np.int64),
            ),
        }
        for name, (xq, yq) in queries.items():
            flagged = nearest(xq, x) < floor
            row(name, flagged)
            right = trained.head.predict_proba(unit_rows(xq)).argmax(1) == yq
            for kind, mask in (("flagged", flagged), ("not flagged", ~flagged)):
                if mask.any():
                    acc = right[mask].mean()
                    print(f"|   head right when {kind} | {acc:.3f} | | {mask.sum()} pictures |")
        row(f"untaught classes, {teach_style}", nearest(feats[teach_style][~taught], x) < floor)
        row(f"untaught classes, {other}", nearest(feats[other][~other_taught], x) < floor)
        row("photos", nearest(photos, x) < floor)


if __name__ == "__main__":
    main()
