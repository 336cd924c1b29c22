"""training.emoji.products_ship: the metrics and card it writes from a leave-one-style-out run
(the real committed bundle's metadata; the fold figures are a small hand-made run record)."""

from __future__ import annotations

import numpy as np

from app.bundle import load_bundle
from app.metrics import evaluate_probs, wilson_interval
from training.emoji.catalog import PROJECT_ROOT, STYLES
from training.emoji.products_finetune import FineTune
from training.emoji.products_ship import HELD_OUT, card, loso_metrics


def _score(k: int, n: int) -> dict[str, float]:
    iv = wilson_interval(k, n)
    return {"k": k, "n": n, "low": iv.low, "high": iv.high}


def _loso() -> dict:
    folds = [
        {
            "held_out": s,
            "fmnist_val": 0.945,
            "fmnist_test": 0.94,
            "drawing": _score(14 - i % 3, 14),
            "product_shot": _score(13, 14),
        }
        for i, s in enumerate(STYLES)
    ]
    k = sum(f["drawing"]["k"] for f in folds)
    return {
        "settings": {"epochs": 1},
        "folds": folds,
        "pooled": {"drawing": _score(k, 98), "product_shot": _score(13 * 7, 98)},
    }


def test_loso_metrics_name_each_held_out_style_and_the_pooled_figure() -> None:
    loso = _loso()
    ms = loso_metrics(loso)
    assert len(ms) == len(STYLES) + 1
    assert all(m.split == HELD_OUT and m.n_samples > 0 for m in ms)
    assert [s in m.dataset for s, m in zip(STYLES, ms, strict=False)] == [True] * len(STYLES)
    assert ms[-1].n_samples == 98
    assert ms[-1].accuracy == loso["pooled"]["drawing"]["k"] / 98


def test_card_reports_folds_pooled_interval_licences_and_settings() -> None:
    bundle = load_bundle(PROJECT_ROOT / "models" / "products", verify_hash=False)
    rng = np.random.default_rng(0)
    y = np.arange(200) % 10
    probs = rng.random((200, 10)).astype(np.float32)
    probs[np.arange(200), y] += 1.5
    test = evaluate_probs(y, probs / probs.sum(1, keepdims=True), bundle.labels)
    ft = FineTune(epochs=1, fm_per_epoch=54_000, drawing_share=0.1, distill=0.5)
    loso = _loso()
    text = card(
        bundle.metadata,
        bundle.labels,
        loso,
        ft,
        test,
        0.5,
        {"seconds": 60, "fmnist_val": 0.9},
        "v1",
    )
    pooled = loso["pooled"]["drawing"]
    assert f"| pooled (Wilson 95%) | {pooled['k']}/98 = " in text
    for style in STYLES:
        assert f"| {style} |" in text
    assert "CC BY-SA 4.0" in text and "Apache-2.0" in text and "MIT" in text
    assert "54,000 Fashion-MNIST training images plus 6,000 drawing views (10%)" in text
    assert "50% teacher" in text
    assert f"n = {test.n_samples:,}" in text
