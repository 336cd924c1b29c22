"""Classification metrics from labels and scores: numpy + stdlib only (no TensorFlow, no FastAPI).

Part of the shared core (docs/architecture.md): the server's teach jobs, the training recipes
and the benches all compute accuracy, per-class P/R/F1, confusion matrices, top-k, binomial
intervals, ROC AUC and calibrated binary thresholds here, so every figure has one definition.
Every result carries its sample size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from app.bundle import Metrics

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]


# --- multi-class -------------------------------------------------------------------------


def accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Share of exact matches; 0 samples is an error, not 0 or 1."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"need two equal, non-empty label arrays; got {t.shape} and {p.shape}")
    return float(np.mean(t == p))


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int) -> IntArray:
    """Counts with rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def top_k_hits(probs: FloatArray, y_true: npt.ArrayLike, k: int) -> BoolArray:
    """Per row: is the true class among the k highest scores (ties: the lower index first)?"""
    order = np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :k]
    return np.asarray(np.any(order == np.asarray(y_true, np.int64)[:, None], axis=1))


def top_k_accuracy(probs: FloatArray, y_true: npt.ArrayLike, k: int) -> float:
    return float(np.mean(top_k_hits(probs, y_true, k)))


@dataclass(frozen=True)
class ClassReport:
    label: str
    precision: float
    recall: float
    f1: float
    support: int  # true examples of this class in the evaluated split


def per_class_report(cm: IntArray, class_names: Sequence[str]) -> list[ClassReport]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined)."""
    k = len(class_names)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return [
        ClassReport(name, float(p), float(r), float(f), int(s))
        for name, p, r, f, s in zip(class_names, precision, recall, f1, actual, strict=True)
    ]


@dataclass(frozen=True)
class EvalReport:
    """Everything about one multi-class evaluation on one split."""

    n_samples: int
    accuracy: float
    top_k: int
    top_k_accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: list[ClassReport]
    confusion: list[list[int]]  # rows = true class, columns = predicted class

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_metrics(
        self,
        dataset: str,
        split: str,
        evaluated_with: Literal["keras", "onnxruntime"],
        notes: str | None = None,
        **extra: float,
    ) -> Metrics:
        """The bundle-contract form (macro averages; top-5 where there are more than 5 classes)."""
        return Metrics(
            dataset=dataset,
            split=split,
            n_samples=self.n_samples,
            accuracy=self.accuracy,
            top5_accuracy=self.top_k_accuracy if self.top_k == 5 else None,
            precision=self.macro_precision,
            recall=self.macro_recall,
            f1=self.macro_f1,
            evaluated_with=evaluated_with,
            notes=notes,
            extra={f"top{self.top_k}_accuracy": self.top_k_accuracy, **extra},
        )


def default_top_k(num_classes: int) -> int:
    """5, or 2 where there are 5 classes or fewer (top-5 of 5 classes is always 100%)."""
    return 5 if num_classes > 5 else 2


def evaluate_probs(
    y_true: npt.ArrayLike, probs: FloatArray, class_names: Sequence[str], top_k: int | None = None
) -> EvalReport:
    """Accuracy, top-k, macro and per-class P/R/F1 and the confusion matrix from probabilities.

    Macro averages run over the classes that occur in `y_true`."""
    y = np.asarray(y_true, np.int64)
    p = np.asarray(probs)
    k = len(class_names)
    if p.shape != (len(y), k) or len(y) == 0:
        raise ValueError(f"probs shape {p.shape} does not match {len(y)} x {k} (n must be > 0)")
    y_pred = p.argmax(axis=1)
    cm = confusion_matrix(y, y_pred, k)
    classes = per_class_report(cm, class_names)
    present = [c for c in classes if c.support > 0]
    kk = top_k if top_k is not None else default_top_k(k)
    return EvalReport(
        n_samples=len(y),
        accuracy=accuracy(y, y_pred),
        top_k=kk,
        top_k_accuracy=top_k_accuracy(p, y, kk),
        macro_precision=float(np.mean([c.precision for c in present])),
        macro_recall=float(np.mean([c.recall for c in present])),
        macro_f1=float(np.mean([c.f1 for c in present])),
        per_class=classes,
        confusion=cm.tolist(),
    )


# --- binomial intervals ------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    k: int
    n: int
    low: float
    high: float
    level: float
    method: Literal["wilson", "clopper_pearson"]

    @property
    def estimate(self) -> float:
        return self.k / self.n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_kn(k: int, n: int) -> None:
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1; got k={k}, n={n}")


def wilson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for k successes out of n (good coverage even for small n)."""
    _check_kn(k, n)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends, not rounding noise
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(k, n, low, high, level, "wilson")


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Exact (Clopper-Pearson) interval, by bisection on the binomial CDF (never too narrow)."""
    _check_kn(k, n)

    def cdf(j: int, p: float) -> float:  # P(X <= j)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(j + 1))

    def solve(f: Callable[[float], bool]) -> float:  # smallest p in [0, 1] with f(p) true
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if f(mid) else (mid, hi)
        return hi

    a = (1 - level) / 2
    lower = 0.0 if k == 0 else solve(lambda p: cdf(k - 1, p) <= 1 - a)
    upper = 1.0 if k == n else solve(lambda p: cdf(k, p) <= a)
    return Interval(k, n, lower, upper, level, "clopper_pearson")


# --- binary scores -----------------------------------------------------------------------


def _binary_inputs(scores: npt.ArrayLike, positive: npt.ArrayLike) -> tuple[FloatArray, BoolArray]:
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    if s.ndim != 1 or s.shape != pos.shape or s.size == 0:
        raise ValueError(f"need equal, non-empty 1-d scores and labels; got {s.shape}, {pos.shape}")
    return s, pos


@dataclass(frozen=True)
class BinaryReport:
    """Counts and rates of `score >= threshold` against the true labels."""

    threshold: float
    n: int
    n_positive: int
    n_negative: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float  # 0 where nothing is predicted positive
    recall: float
    f1: float
    accuracy: float
    false_positive_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def binary_report(scores: npt.ArrayLike, positive: npt.ArrayLike, threshold: float) -> BinaryReport:
    s, pos = _binary_inputs(scores, positive)
    pred = s >= threshold
    tp, fp = int(np.sum(pred & pos)), int(np.sum(pred & ~pos))
    fn, tn = int(np.sum(~pred & pos)), int(np.sum(~pred & ~pos))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BinaryReport(
        threshold=float(threshold),
        n=len(s),
        n_positive=tp + fn,
        n_negative=fp + tn,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        precision=precision,
        recall=recall,
        f1=f1,
        accuracy=(tp + tn) / len(s),
        false_positive_rate=fp / (fp + tn) if fp + tn else 0.0,
    )


def roc_auc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties 1/2."""
    s, pos = _binary_inputs(scores, positive)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative example")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties (Mann-Whitney U)
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def _cuts(s: FloatArray) -> list[float]:
    """Candidate thresholds: each distinct score (predict positive at and above it) and 'none'."""
    return [*np.unique(s).tolist(), math.inf]


def recall_at_fpr(scores: npt.ArrayLike, positive: npt.ArrayLike, max_fpr: float) -> BinaryReport:
    """The threshold with the highest recall whose false-positive rate is <= max_fpr."""
    s, pos = _binary_inputs(scores, positive)
    best: BinaryReport | None = None
    for t in _cuts(s):
        r = binary_report(s, pos, t)
        if r.false_positive_rate <= max_fpr and (best is None or r.recall > best.recall):
            best = r
    assert best is not None  # the 'none' cut has FPR 0
    return best


@dataclass(frozen=True)
class Calibration:
    """A decision threshold chosen on validation scores, with what it gave there."""

    threshold: float
    rule: str  # e.g. "max_f1", "precision>=0.95"
    validation: BinaryReport  # figures on the scores it was chosen on (in-sample)
    reached: bool = True  # False when the target could not be met (see rule)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def max_f1_threshold(scores: npt.ArrayLike, positive: npt.ArrayLike) -> Calibration:
    """The threshold with the best F1. Inside the best interval of cuts it is 0.5 if 0.5 lies
    there (no reason to move off the network's own even odds), else the interval midpoint
    (rounded to 4 decimals)."""
    s, pos = _binary_inputs(scores, positive)
    cands = np.unique(np.concatenate([s, [0.0, 1.0]]))
    best_f1, best_lo, best_hi = -1.0, 0.0, 1.0
    for lo, hi in itertools.pairwise(cands):
        pred = s >= (lo + hi) / 2
        tp = int(np.sum(pred & pos))
        f1 = 2 * tp / (int(pred.sum()) + int(pos.sum())) if tp else 0.0
        if f1 > best_f1 + 1e-12:
            best_f1, best_lo, best_hi = f1, float(lo), float(hi)
        elif abs(f1 - best_f1) <= 1e-12 and lo == best_hi:
            best_hi = float(hi)  # extend a contiguous run of equally good cuts
    t = 0.5 if best_lo < 0.5 <= best_hi else float(round((best_lo + best_hi) / 2, 4))
    return Calibration(t, "max_f1", binary_report(s, pos, t))


def threshold_for_precision(
    scores: npt.ArrayLike, positive: npt.ArrayLike, target: float
) -> Calibration:
    """The lowest threshold whose precision reaches `target` (so the most recall at that
    precision). If no cut reaches it, the cut with the best precision, marked not reached."""
    s, pos = _binary_inputs(scores, positive)
    rule = f"precision>={target:g}"
    reports = [binary_report(s, pos, t) for t in np.unique(s).tolist()]
    ok = [r for r in reports if r.tp > 0 and r.precision >= target]
    if ok:
        lowest = min(ok, key=lambda r: r.threshold)
        return Calibration(lowest.threshold, rule, lowest)
    best = max(reports, key=lambda r: (r.precision, r.recall))
    return Calibration(best.threshold, rule, best, reached=False)


def calibrate_threshold(
    scores: npt.ArrayLike,
    positive: npt.ArrayLike,
    rule: Literal["max_f1", "precision"] = "max_f1",
    target: float | None = None,
) -> Calibration:
    """One entry point for the rules above (`target` is the precision for rule 'precision')."""
    if rule == "max_f1":
        return max_f1_threshold(scores, positive)
    if target is None:
        raise ValueError("rule 'precision' needs a target precision")
    return threshold_for_precision(scores, positive, target)
