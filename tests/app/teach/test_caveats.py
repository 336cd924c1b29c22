"""app.teach.caveats: the warnings a teach job's figures need to be read honestly, and the
figures it leaves out (through app.teach.core.train, as a job reports them)."""

from __future__ import annotations

import numpy as np

from app.metrics import evaluate_probs
from app.teach.caveats import (
    below_baseline,
    conflicting_copies,
    look_alike_labels,
    without_trivial_top_k,
)
from app.teach.core import train
from app.teach.examples import Examples
from app.teach.head import unit

FULL_WIDTH_CAT = "\uff23\uff21\uff34"  # CAT in full-width letters


def _examples(
    labels: list[str], per_class: list[int], seed: int = 0, spread: float = 3.0
) -> Examples:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(labels), 16)) * spread
    x = np.concatenate([centres[i] + rng.normal(size=(n, 16)) for i, n in enumerate(per_class)])
    y = np.concatenate([np.full(n, i) for i, n in enumerate(per_class)]).astype(np.int64)
    return Examples(x=unit(x), y=y, labels=tuple(labels), skipped_unlabelled=0)


def test_labels_that_differ_only_by_case_spacing_or_unicode_form_are_named() -> None:
    assert look_alike_labels(["cat", "dog"]) == []
    found = look_alike_labels(["Dog", "cat", "dog", "not  santa", "not santa", FULL_WIDTH_CAT])
    assert len(found) == 3
    assert any("'Dog' and 'dog'" in w for w in found)
    assert any(f"'cat' and '{FULL_WIDTH_CAT}'" in w for w in found)  # full-width letters: NFKC
    assert any("'not  santa' and 'not santa'" in w for w in found)


def test_one_picture_under_two_labels_is_counted() -> None:
    ex = _examples(["bag", "trouser"], [5, 5])
    x = np.concatenate([ex.x, ex.x[:2]])  # the first two bags filed again as trousers
    y = np.concatenate([ex.y, [1, 1]]).astype(np.int64)
    (w,) = conflicting_copies(x, y, ex.labels)
    assert w.startswith("2 picture(s)") and "'bag' / 'trouser'" in w
    assert conflicting_copies(ex.x, ex.y, ex.labels) == []
    # the same picture twice under one label is not a conflict
    assert conflicting_copies(np.concatenate([ex.x, ex.x[:1]]), np.append(ex.y, 0), ex.labels) == []


def test_accuracy_no_better_than_the_largest_class_is_called_out() -> None:
    y = np.array([0] * 97 + [1] * 3)
    always_zero = np.tile([0.9, 0.1], (100, 1))
    report = evaluate_probs(y, always_zero, ("tshirt", "shirt"))
    (w,) = below_baseline(report)
    assert "0.970" in w and "'tshirt'" in w and "macro recall 0.500" in w
    perfect = np.eye(2)[y]
    assert below_baseline(evaluate_probs(y, perfect, ("tshirt", "shirt"))) == []


def test_top_k_covering_every_class_is_left_out() -> None:
    extra = {"top2_accuracy": 1.0, "accuracy_ci95_low": 0.1}
    assert without_trivial_top_k(extra, 2) == {"accuracy_ci95_low": 0.1}
    assert without_trivial_top_k(extra, 3) == extra
    assert without_trivial_top_k({"top5_accuracy": 0.9}, 5) == {}


def test_a_taught_report_carries_the_caveats_and_no_trivial_figures() -> None:
    """A 1:100 imbalance scored 0.987 held out, below the 0.990 of always answering the large
    class, with no word about it; a two-class report said top2_accuracy 1.0 next to an accuracy
    of 0.5; 'Dog' and 'dog' were taught as two classes in silence."""
    ex = _examples(["Dog", "dog", "shirt"], [12, 12, 12], spread=0.0)  # nothing to learn
    t = train(ex, dataset="toy")
    assert "top2_accuracy" in t.metrics.extra  # three classes: top-2 is informative ...
    assert "top5_accuracy" not in t.metrics.extra and t.metrics.top5_accuracy is None
    assert t.metrics.extra["majority_class_accuracy"] == round(12 / 36, 4)
    assert any("'Dog' and 'dog'" in w for w in t.warnings)
    assert any("no better than always answering" in w for w in t.warnings) == (
        t.report.accuracy <= 12 / 36
    )
    two = train(_examples(["sandal", "sneaker"], [12, 12]), dataset="toy")
    assert "top2_accuracy" not in two.metrics.extra  # ... of two it is always 1.0
    assert "accuracy_ci95_low" in two.metrics.extra
    imbalanced = train(_examples(["big", "small"], [300, 3], spread=0.0), dataset="toy")
    assert imbalanced.report.accuracy <= 300 / 303
    assert any("no better than always answering 'big'" in w for w in imbalanced.warnings)
