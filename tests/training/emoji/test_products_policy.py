"""training.emoji.products_policy: the card section and metrics quote the counts that were
measured, never typed-in ones ("n=10,000", "14 emoji")."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.metrics import evaluate_probs
from training.emoji.catalog import STYLES
from training.emoji.products_policy import _card_section, drawing_metrics


def _result(emoji: int) -> dict[str, Any]:
    """products_eval.evaluate's shape: `emoji` drawings per style, half of them right."""
    cell = {"k": emoji // 2, "n": emoji, "low": 0.2, "high": 0.8}
    pooled = {"k": 7 * (emoji // 2), "n": 7 * emoji, "low": 0.3, "high": 0.7}
    per_policy = {"pooled": pooled, "per_style": dict.fromkeys(STYLES, cell)}
    keys = ("drawing/as_is", "drawing/trim", "product_shot/as_is", "product_shot/trim")
    return {
        "n": 7 * emoji,
        "emoji": {"pooled": emoji, "per_style": dict.fromkeys(STYLES, emoji)},
        "policies": dict.fromkeys(keys, per_policy),
    }


def _report(n: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    probs = rng.random((n, 10)).astype(np.float32)
    probs[np.arange(n), y] += 0.8
    return evaluate_probs(y, probs, tuple(str(i) for i in range(10)))


def test_card_section_quotes_the_measured_counts() -> None:
    plain, inverted = _report(137, 0), _report(91, 1)
    text = _card_section(_result(5), plain, inverted, before=0.5)
    assert "Fashion-MNIST official test (n=137)" in text and "inverted, n=91:" in text
    assert f"**{100 * plain.accuracy:.2f}%**" in text and "without it: 50.00%" in text
    assert "5 emoji mapped to Fashion-MNIST classes per style" in text
    assert "10,000" not in text and "14 emoji" not in text
    assert "| noto | 2/5 | 2/5 | 2/5 | 2/5 |" in text


def test_drawing_metrics_name_the_emoji_count_and_n_per_style() -> None:
    metrics = drawing_metrics(_result(3))
    assert [m.n_samples for m in metrics] == [3] * len(STYLES)
    assert all("(3 emoji mapped to Fashion-MNIST classes)" in m.dataset for m in metrics)
    assert metrics[0].accuracy == 1 / 3


def test_products_eval_counts_the_emoji_it_scored_through_the_servers_runtime() -> None:
    """The counts products_policy quotes come from the pictures actually scored (real emoji art,
    the shipped bundle, app.runtime via training.serving_eval.open_model)."""
    from training.emoji.catalog import PROJECT_ROOT, load_catalog
    from training.emoji.products_eval import evaluate

    res = evaluate(PROJECT_ROOT / "models" / "products", styles=("noto",))
    pics = [p for p in load_catalog(styles=["noto"]) if p.fashion_class is not None]
    assert res["emoji"] == {"pooled": len({p.key for p in pics}), "per_style": {"noto": len(pics)}}
    for policy in res["policies"].values():
        assert policy["per_style"]["noto"]["n"] == policy["pooled"]["n"] == len(pics)
        assert 0 <= policy["pooled"]["k"] <= len(pics)
