"""app/metrics.py against hand-computed cases and, where installed, scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from app import metrics as m_

# 3 classes, 8 examples; hand-computed below.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0])


def onehot_probs(pred: np.ndarray, k: int, second: np.ndarray | None = None) -> np.ndarray:
    p = np.full((len(pred), k), 0.01, np.float32)
    p[np.arange(len(pred)), pred] = 0.9
    if second is not None:
        p[np.arange(len(pred)), second] = 0.08
    return p


def test_confusion_and_per_class_by_hand() -> None:
    cm = m_.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    rep = m_.per_class_report(cm, ("a", "b", "c"))
    # class a: tp 2, predicted 3, actual 3 -> P 2/3, R 2/3; class b: tp 1, predicted 2, actual 2
    assert rep[0].precision == pytest.approx(2 / 3) and rep[0].recall == pytest.approx(2 / 3)
    assert rep[1].precision == pytest.approx(1 / 2) and rep[1].recall == pytest.approx(1 / 2)
    assert rep[2].precision == pytest.approx(2 / 3) and rep[2].recall == pytest.approx(2 / 3)
    assert [r.support for r in rep] == [3, 2, 3]
    assert m_.accuracy(Y_TRUE, Y_PRED) == pytest.approx(5 / 8)


def test_evaluate_probs_top_k_and_macro() -> None:
    second = np.array([1, 1, 0, 0, 1, 0, 0, 2 - 2])  # last row: true 2, 2nd guess 0 = top-1
    probs = onehot_probs(Y_PRED, 3, second)
    r = m_.evaluate_probs(Y_TRUE, probs, ("a", "b", "c"))
    assert r.n_samples == 8 and r.top_k == 2
    assert r.accuracy == pytest.approx(5 / 8)
    # wrong rows: idx 2 (true 0, 2nd 0 -> hit), 4 (true 1, 2nd 1 -> hit), 7 (true 2, 2nd 0 -> miss)
    assert r.top_k_accuracy == pytest.approx(7 / 8)
    assert r.macro_f1 == pytest.approx(np.mean([2 / 3, 1 / 2, 2 / 3]))
    m = r.to_metrics("toy", "test", "onnxruntime")
    assert (
        m.n_samples == 8
        and m.top5_accuracy is None
        and m.extra["top2_accuracy"] == r.top_k_accuracy
    )
    assert r.to_dict()["per_class"][1]["support"] == 2


def test_macro_averages_skip_absent_classes_and_empty_input_is_an_error() -> None:
    probs = onehot_probs(np.array([0, 1]), 3)
    r = m_.evaluate_probs(np.array([0, 1]), probs, ("a", "b", "c"))
    assert r.macro_recall == 1.0 and r.per_class[2].support == 0
    with pytest.raises(ValueError):
        m_.evaluate_probs(np.array([], np.int64), np.zeros((0, 3)), ("a", "b", "c"))


def test_top_k_ties_go_to_the_lower_index() -> None:
    probs = np.array([[0.5, 0.5, 0.0]])
    assert m_.top_k_hits(probs, [0], 1).tolist() == [True]
    assert m_.top_k_hits(probs, [1], 1).tolist() == [False]


def test_wilson_interval_known_values() -> None:
    # Wilson 95% for 17/20: 0.6396..0.9476 (textbook formula, z = 1.95996)
    iv = m_.wilson_interval(17, 20)
    assert (iv.low, iv.high) == pytest.approx((0.6396, 0.9476), abs=5e-4)
    assert m_.wilson_interval(0, 10).low == 0.0 and m_.wilson_interval(10, 10).high == 1.0
    with pytest.raises(ValueError):
        m_.wilson_interval(3, 2)


def test_clopper_pearson_known_values() -> None:
    # Exact interval for 17/20 (beta quantiles): 0.6211..0.9679; 3/3: 0.2924..1
    iv = m_.clopper_pearson_interval(17, 20)
    assert (iv.low, iv.high) == pytest.approx((0.6211, 0.9679), abs=5e-4)
    assert m_.clopper_pearson_interval(3, 3).low == pytest.approx(0.2924, abs=5e-4)


def test_binary_report_by_hand() -> None:
    scores = [0.9, 0.8, 0.4, 0.3, 0.2]
    pos = [True, False, True, False, False]
    r = m_.binary_report(scores, pos, 0.5)
    assert (r.tp, r.fp, r.fn, r.tn) == (1, 1, 1, 2)
    assert r.precision == 0.5 and r.recall == 0.5 and r.false_positive_rate == pytest.approx(1 / 3)
    assert r.n == 5 and r.n_positive == 2 and r.n_negative == 3


def test_roc_auc_by_hand_with_ties() -> None:
    # pairs (pos, neg): 0.9>0.8, 0.9>0.3, 0.9>0.2, 0.4<0.8, 0.4>0.3, 0.4>0.2 -> 5/6
    assert m_.roc_auc([0.9, 0.8, 0.4, 0.3, 0.2], [1, 0, 1, 0, 0]) == pytest.approx(5 / 6)
    assert m_.roc_auc([0.5, 0.5], [1, 0]) == 0.5
    with pytest.raises(ValueError):
        m_.roc_auc([0.1, 0.2], [1, 1])


def test_recall_at_fpr() -> None:
    scores = [0.9, 0.8, 0.4, 0.3, 0.2]
    pos = [True, False, True, False, False]
    assert m_.recall_at_fpr(scores, pos, 0.0).recall == 0.5  # cut at 0.9
    r = m_.recall_at_fpr(scores, pos, 0.34)  # one false positive of three allowed
    assert r.recall == 1.0 and r.threshold == 0.4


def test_max_f1_threshold_prefers_even_odds_and_midpoints() -> None:
    # perfectly separable around 0.5: every cut in (0.3, 0.7] is best -> 0.5
    c = m_.max_f1_threshold([0.9, 0.7, 0.3, 0.1], [1, 1, 0, 0])
    assert c.threshold == 0.5 and c.validation.f1 == 1.0 and c.rule == "max_f1"
    # separable above 0.5 only: best interval (0.6, 0.8] -> midpoint 0.7
    c = m_.max_f1_threshold([0.95, 0.8, 0.6, 0.1], [1, 1, 0, 0])
    assert c.threshold == 0.7 and c.validation.n == 4


def test_threshold_for_precision() -> None:
    scores = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5]
    pos = [1, 1, 0, 1, 0, 0]
    c = m_.threshold_for_precision(scores, pos, 0.75)  # cut 0.7: 3 tp / 4 -> 0.75, recall 1
    assert c.reached and c.threshold == 0.7 and c.validation.recall == 1.0
    c = m_.calibrate_threshold(scores, pos, "precision", 1.0)
    assert c.threshold == 0.9 and c.validation.precision == 1.0
    miss = m_.threshold_for_precision([0.9, 0.8], [0, 1], 0.99)
    assert not miss.reached
    assert m_.calibrate_threshold(scores, pos).rule == "max_f1"
    assert miss.to_dict()["validation"]["n"] == 2


def test_against_sklearn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    k, n = 6, 500
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    r = m_.evaluate_probs(y, probs, tuple("abcdef"))
    pred = probs.argmax(1)
    assert r.accuracy == pytest.approx(sk.accuracy_score(y, pred))
    assert r.confusion == sk.confusion_matrix(y, pred).tolist()
    assert r.macro_f1 == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert r.macro_precision == pytest.approx(sk.precision_score(y, pred, average="macro"))
    assert r.top_k_accuracy == pytest.approx(sk.top_k_accuracy_score(y, probs, k=5))
    p, rc, f, s = sk.precision_recall_fscore_support(y, pred)
    assert [c.precision for c in r.per_class] == pytest.approx(p.tolist())
    assert [c.f1 for c in r.per_class] == pytest.approx(f.tolist())
    assert [c.recall for c in r.per_class] == pytest.approx(rc.tolist())
    assert [c.support for c in r.per_class] == s.tolist()
    scores = np.round(probs[:, 0], 2)  # rounding makes ties
    assert m_.roc_auc(scores, y == 0) == pytest.approx(sk.roc_auc_score(y == 0, scores))
