"""The lecture's route for Santa: a small CNN from scratch at 64x64, leave-one-style-out.

Same protocol as training.emoji.loso, cut short for CPU: per held-out style, the lecture CNN
(training.architectures 'lecture_cnn') is trained for a few epochs on the other styles (with
random flips, shifts, zoom and contrast), the threshold is chosen on a 10% validation split of
the training styles (max F1), and the held-out style is scored once. Reports per style and
pooled. CLI: ``python -m training.emoji.scratch [--epochs 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.metrics import calibrate_threshold
from training.emoji.catalog import STYLES, load_catalog
from training.emoji.embed import RENDER_VERSION, cache_dir
from training.emoji.loso import summarise
from training.emoji.render import base_array

logger = logging.getLogger(__name__)
SIZE = 64


def pixels(style: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """All pictures of a style on white at 64x64 (cached) and their Santa labels."""
    pics = load_catalog(styles=[style])
    path = cache_dir() / f"px{SIZE}-r{RENDER_VERSION}" / f"{style}.npz"
    y = np.array([int(p.is_santa) for p in pics], np.int64)
    if path.is_file():
        z = np.load(path)
        if len(z["x"]) == len(pics):
            return z["x"], y
    x = np.stack([base_array(p, SIZE) for p in pics])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=x)
    return x, y


def _model(seed: int) -> Any:
    import keras

    from training.architectures import create_model

    keras.utils.set_random_seed(seed)
    aug = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", fill_value=255.0),
            keras.layers.RandomZoom((-0.3, 0.1), fill_mode="constant", fill_value=255.0),
            keras.layers.RandomContrast(0.3),
        ],
        name="augment",
    )
    core = create_model("lecture_cnn", (SIZE, SIZE, 3), 2)
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, core(aug(inputs)))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
    )
    return model


def run(epochs: int, seed: int = 42) -> dict[str, Any]:
    data = {s: pixels(s) for s in STYLES}
    folds: dict[str, Any] = {}
    all_s, all_y, all_t = [], [], []
    for h in STYLES:
        t0 = time.perf_counter()
        x = np.concatenate([data[s][0] for s in STYLES if s != h]).astype(np.float32)
        y = np.concatenate([data[s][1] for s in STYLES if s != h])
        rng = np.random.default_rng(seed)
        val = rng.random(len(y)) < 0.1
        n_pos = max(1, int(y[~val].sum()))
        weights = {0: len(y) / (2 * (len(y) - n_pos)), 1: len(y) / (2 * n_pos)}
        model = _model(seed)
        model.fit(x[~val], y[~val], epochs=epochs, batch_size=64, class_weight=weights, verbose=0)
        val_scores = model.predict(x[val], batch_size=256, verbose=0)[:, 1]
        cal = calibrate_threshold(val_scores, y[val] == 1, "max_f1")
        xt, yt = data[h]
        scores = model.predict(xt.astype(np.float32), batch_size=256, verbose=0)[:, 1]
        folds[h] = {**summarise(scores, yt, cal.threshold), "threshold": cal.threshold}
        folds[h]["train_s"] = round(time.perf_counter() - t0, 1)
        logger.info("%s: %s", h, folds[h]["recall"])
        all_s.append(scores)
        all_y.append(yt)
        all_t.append(np.full(len(yt), cal.threshold))
    pooled = summarise(np.concatenate(all_s), np.concatenate(all_y), np.concatenate(all_t))
    return {
        "route": "lecture_cnn 64x64 from scratch",
        "epochs": epochs,
        "folds": folds,
        "pooled": pooled,
    }


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    res = run(args.epochs)
    text = json.dumps(res, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
