"""app.classify: the ranked labels of one image."""

from __future__ import annotations

import numpy as np
import pytest

from app.classify import top_k_predictions

LABELS = tuple(f"class-{i}" for i in range(1000))


@pytest.mark.parametrize("seed", range(20))
def test_top_k_matches_a_stable_sort_of_every_class(seed: int) -> None:
    """The O(n) selection ranks exactly as a stable argsort of all scores: highest first, ties
    to the lower class index (scores drawn from 4 values, so ties cross the k-th place)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 1001))
    k = int(rng.integers(1, n + 1))
    for probs in (rng.random(n).astype(np.float32), rng.integers(0, 4, n).astype(np.float32)):
        got = [p.index for p in top_k_predictions(probs, LABELS[:n], k)]
        assert got == np.argsort(-probs, kind="stable")[:k].tolist()


def test_top_k_labels_scores_and_cap() -> None:
    probs = np.array([0.1, 0.6, 0.3], np.float32)
    preds = top_k_predictions(probs, ("a", "b", "c"), 10)  # k above the class count
    assert [(p.label, p.index) for p in preds] == [("b", 1), ("c", 2), ("a", 0)]
    assert [p.score for p in preds] == pytest.approx([0.6, 0.3, 0.1])
    tied = top_k_predictions(np.array([0.5, 0.0, 0.5], np.float32), ("a", "b", "c"), 1)
    assert [p.label for p in tied] == ["a"]
