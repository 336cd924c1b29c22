"""Linear heads on cached backbone features: standardise, logistic regression, score.

A head is a plain (mean, scale, weights, bias) tuple so it can be composed onto the backbone's
ONNX graph (training.emoji.compose) and checked there against these numpy scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression

MASS_EPS = 1e-6


def mass_logit(mass: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """log(m / (1 - m)) of the ImageNet bird mass, clipped away from 0 and 1."""
    m = np.clip(mass.astype(np.float64), MASS_EPS, 1 - MASS_EPS)
    return np.log(m / (1 - m)).astype(np.float32)


def features(
    emb: npt.NDArray[np.float32], mass: npt.NDArray[np.float32], use_mass: bool
) -> npt.NDArray[np.float32]:
    """The head's input: the embedding, plus the bird-mass logit as one more column."""
    if not use_mass:
        return emb
    return np.concatenate([emb, mass_logit(mass)[:, None]], axis=1)


@dataclass(frozen=True)
class LinearHead:
    mean: npt.NDArray[np.float32]
    scale: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float32]
    bias: float
    use_mass: bool
    c: float

    def logits(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        z = (x.astype(np.float64) - self.mean) / self.scale
        return np.asarray(z @ self.weights.astype(np.float64) + self.bias)

    def score(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        return np.asarray(1.0 / (1.0 + np.exp(-self.logits(x))))


def fit_head(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    *,
    c: float,
    use_mass: bool,
    sample_weight: npt.NDArray[np.float64] | None = None,
    max_iter: int = 300,
) -> LinearHead:
    """L2 logistic regression on standardised features, classes balanced by weight."""
    mean = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale[scale < 1e-6] = 1.0
    z = (x - mean) / scale
    n_pos = max(1, int(y.sum()))
    n_neg = max(1, len(y) - n_pos)
    w = np.where(y == 1, len(y) / (2 * n_pos), len(y) / (2 * n_neg))
    if sample_weight is not None:
        w = w * sample_weight
    model = LogisticRegression(C=c, max_iter=max_iter, tol=1e-4)
    model.fit(z, y, sample_weight=w)
    return LinearHead(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=model.coef_[0].astype(np.float32),
        bias=float(model.intercept_[0]),
        use_mass=use_mass,
        c=c,
    )
