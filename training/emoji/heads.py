"""Linear heads on cached backbone features: project, standardise, logistic regression, score.

A head is plain arrays (an optional PCA projection, mean, scale, weights, bias): all linear,
so it folds into one dot product when composed onto the backbone's ONNX graph
(training.emoji.compose) and is checked there against these numpy scores. The projection
(PCA fitted on the training rows only) decorrelates the features: fits converge ~10x faster.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

MASS_EPS = 1e-6


def mass_logit(mass: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """log(m / (1 - m)) of the ImageNet bird mass, clipped away from 0 and 1."""
    m = np.clip(mass.astype(np.float64), MASS_EPS, 1 - MASS_EPS)
    return np.log(m / (1 - m)).astype(np.float32)


def features(
    emb: npt.NDArray[np.float32], mass: npt.NDArray[np.float32], use_mass: bool
) -> npt.NDArray[np.float32]:
    """The head's input: the square root of the (non-negative, post-ReLU average) embedding,
    plus the bird-mass logit as one more column. The square root ("power normalisation")
    damps the few large activations that differ most between drawing styles: on 5 styles'
    leave-one-style-out (Santa), recall at 1% FPR 71/90 vs 58/90 on the raw embedding."""
    root = np.sqrt(np.maximum(emb, 0.0)).astype(np.float32)
    if not use_mass:
        return root
    return np.concatenate([root, mass_logit(mass)[:, None]], axis=1)


@dataclass(frozen=True)
class Projection:
    """x -> (x - mean) @ components.T (top principal directions of the training features)."""

    mean: npt.NDArray[np.float32]
    components: npt.NDArray[np.float32]  # k x D

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return ((x - self.mean) @ self.components.T).astype(np.float32)


def fit_projection(
    x: npt.NDArray[np.float32], k: int = 768, max_rows: int = 6000, seed: int = 0
) -> Projection:
    """PCA from the covariance of at most `max_rows` training rows (a seeded sample)."""
    rng = np.random.default_rng(seed)
    rows = x if len(x) <= max_rows else x[rng.choice(len(x), max_rows, replace=False)]
    mean = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = rows - mean
    _, vecs = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    top = vecs[:, ::-1][:, : min(k, vecs.shape[1])]  # eigh sorts ascending
    return Projection(mean, np.ascontiguousarray(top.T, dtype=np.float32))


@dataclass(frozen=True)
class LinearHead:
    mean: npt.NDArray[np.float32]
    scale: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float32]
    bias: float
    use_mass: bool
    c: float
    projection: Projection | None = None  # applied to raw features before `mean`/`scale`

    def logits(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Logits of raw features (the projection, when there is one, is applied first)."""
        w, b = self.folded()
        return np.asarray(x.astype(np.float64) @ w + b)

    def folded(self) -> tuple[npt.NDArray[np.float64], float]:
        """(w, b) with logit = x @ w + b on raw features: every linear step folded in."""
        w = self.weights.astype(np.float64) / self.scale
        b = self.bias - float(np.sum(self.mean.astype(np.float64) * w))
        if self.projection is not None:
            p = self.projection
            w = p.components.T.astype(np.float64) @ w
            b -= float(p.mean.astype(np.float64) @ w)
        return w, b

    def with_projection(self, projection: Projection) -> LinearHead:
        return replace(self, projection=projection)

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
    tol: float = 1e-3,
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
    from sklearn.linear_model import LogisticRegression  # train extra; scoring needs none

    model = LogisticRegression(C=c, max_iter=max_iter, tol=tol)
    model.fit(z, y, sample_weight=w)
    return LinearHead(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=model.coef_[0].astype(np.float32),
        bias=float(model.intercept_[0]),
        use_mass=use_mass,
        c=c,
    )
