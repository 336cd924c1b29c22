"""Classification metrics from predicted probabilities (numpy only, no TensorFlow)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.bundle import Metrics


@dataclass(frozen=True)
class ClassReport:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EvalReport:
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
        evaluated_with: str,
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
            evaluated_with=evaluated_with,  # type: ignore[arg-type]
            notes=notes,
            extra={f"top{self.top_k}_accuracy": self.top_k_accuracy, **extra},
        )


def confusion_matrix(
    y_true: npt.NDArray[np.int64], y_pred: npt.NDArray[np.int64], num_classes: int
) -> npt.NDArray[np.int64]:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def evaluate_probs(
    y_true: npt.NDArray[np.int64], probs: npt.NDArray[np.float32], class_names: tuple[str, ...]
) -> EvalReport:
    """Accuracy, top-k (k=5, or 2 for <= 5 classes), per-class P/R/F1 and the confusion matrix."""
    k = len(class_names)
    if probs.shape != (len(y_true), k):
        raise ValueError(f"probs shape {probs.shape} does not match {len(y_true)} x {k}")
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    top_k = 5 if k > 5 else 2
    top = np.argsort(-probs, axis=1)[:, :top_k]
    top_k_acc = float(np.mean(np.any(top == y_true[:, None], axis=1)))
    present = actual > 0  # macro averages over classes that occur in this split
    return EvalReport(
        n_samples=len(y_true),
        accuracy=float(np.mean(y_pred == y_true)),
        top_k=top_k,
        top_k_accuracy=top_k_acc,
        macro_precision=float(precision[present].mean()),
        macro_recall=float(recall[present].mean()),
        macro_f1=float(f1[present].mean()),
        per_class=[
            ClassReport(name, float(p), float(r), float(f), int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, actual, strict=True)
        ],
        confusion=cm.tolist(),
    )
