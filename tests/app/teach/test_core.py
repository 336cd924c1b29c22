"""app.teach.core: which label a two-class model's threshold is for."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import InvalidRequest
from app.metrics import binary_report, evaluate_probs
from app.teach.core import check_positive_label, plain_summary, positive_index
from app.teach.errors import NotEnoughExamples
from app.teach.yes_no import decision_sentence


def test_the_positive_label_is_the_requested_one_or_not_the_negative_sounding_one() -> None:
    assert positive_index(["bird", "not_bird"], None) == 0
    assert positive_index(["not-santa", "santa"], None) == 1
    assert positive_index(["Other", "cat"], None) == 1
    # Two ordinary categories are not a yes/no question: no positive label (it was the first).
    assert positive_index(["cat", "dog"], None) is None
    assert positive_index(["Sandal", "Sneaker"], None) is None
    assert positive_index(["nothing", "notebook"], None) is None  # whole first words only
    assert positive_index(["Background", "cat"], None) == 1
    assert positive_index(["dog", "no-dog"], None) == 0
    assert positive_index(["cat", "dog"], "dog") == 1
    with pytest.raises(NotEnoughExamples, match="not one of"):
        positive_index(["cat", "dog"], "bird")


def test_positive_label_needs_exactly_two_labels() -> None:
    check_positive_label(None, ["a", "b", "c"])
    check_positive_label("b", ["a", "b"])
    with pytest.raises(InvalidRequest, match=r"two-class models.*3 labels: a, b, c"):
        check_positive_label("b", ["a", "b", "c"])
    with pytest.raises(NotEnoughExamples, match="not one of"):
        check_positive_label("z", ["a", "b"])


def test_each_class_sentence_carries_its_interval() -> None:
    """Round 26 audit: per-class figures from a handful of pictures read as certain."""
    y = np.array([0] * 6 + [1] * 20)
    probs = np.zeros((26, 2))
    probs[np.arange(26), y] = 1.0
    probs[6:8] = [1.0, 0.0]  # two of class 1 taken for class 0
    lines = plain_summary(evaluate_probs(y, probs, ("santa", "not_santa")))
    assert lines == [
        "santa recognised in 6 of 6 held-out pictures (95% interval 61-100%)",
        "not_santa recognised in 18 of 20 held-out pictures (95% interval 70-97%; taken for "
        "santa 2x)",
    ]


def test_the_decision_sentence_states_precision_and_recall_at_the_threshold() -> None:
    """A yes/no model's summary says what its served decision did: `metrics.precision` (the
    average over both classes) was read as the decision's (round 42)."""
    scores = np.array([0.9] * 17 + [0.1] * 5 + [0.8] * 4 + [0.0] * 14)
    is_pos = np.array([True] * 22 + [False] * 18)
    d = binary_report(scores, is_pos, 0.31)
    assert decision_sentence("bird", d) == (
        "At its threshold (0.31) the served decision found 17 of 22 held-out bird pictures "
        "(recall 77%) and was right in 17 of the 21 it flagged (precision 81%)"
    )
    none = binary_report(np.zeros(4), np.array([True, True, False, False]), 0.5)
    assert decision_sentence("bird", none).endswith(
        "found 0 of 2 held-out bird pictures (recall 0%) and flagged no picture"
    )
