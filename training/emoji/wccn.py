"""Within-class covariance normalisation (WCCN) of an identity head's input features.

The same emoji drawn by two design teams lands in different places of the embedding; the
directions in which one emoji varies across styles (line weight, palette, shading, outline)
say nothing about which emoji it is. WCCN, the nuisance-compensation step of speaker
verification, multiplies the features by T = S^(-1/2), where S is the within-emoji covariance
of the training rows (each row minus its emoji's mean) shrunk towards a multiple of the
identity: those nuisance directions are scaled down before the softmax is fitted. T is linear,
so it folds into the head's affine map (IdentityHead.folded) and the served graph keeps its
shape and cost.

The shrinkage is chosen without the task's labels and without the held-out style: leave one of
the training styles out in turn, fit S and the emoji's mean rows on the others, and score how
often the left-out style's pictures (as drawn) are nearest (cosine) to their own emoji's mean;
the highest average wins. Scatter matrices are kept per style, so every inner fold is a sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Scatter:
    """Sufficient statistics of one style's rows: sum of x x^T, per-emoji sums and counts."""

    xx: npt.NDArray[np.float64]  # D x D
    sums: npt.NDArray[np.float64]  # K x D, indexed like the key list given to `scatter`
    counts: npt.NDArray[np.float64]  # K
    total: npt.NDArray[np.float64]  # D
    n: int

    def __add__(self, other: Scatter) -> Scatter:
        return Scatter(
            self.xx + other.xx,
            self.sums + other.sums,
            self.counts + other.counts,
            self.total + other.total,
            self.n + other.n,
        )


def scatter(x: npt.NDArray[np.float32], key_ids: npt.NDArray[np.int64], n_keys: int) -> Scatter:
    x64 = x.astype(np.float64)
    sums = np.zeros((n_keys, x.shape[1]))
    np.add.at(sums, key_ids, x64)
    counts = np.bincount(key_ids, minlength=n_keys).astype(np.float64)
    return Scatter(x64.T @ x64, sums, counts, x64.sum(axis=0), len(x))


def _pooled(parts: Sequence[Scatter]) -> Scatter:
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def within_covariance(s: Scatter) -> npt.NDArray[np.float64]:
    """The covariance of the rows about their own emoji's mean."""
    seen = s.counts > 0
    between = (s.sums[seen].T / s.counts[seen]) @ s.sums[seen]
    return np.asarray((s.xx - between) / s.n)


def whitening(sw: npt.NDArray[np.float64], shrink: float) -> npt.NDArray[np.float32]:
    """T = S^(-1/2), S = (1 - shrink) Sw + shrink (trace(Sw) / D) I, rounded to float16 values
    (the fold files keep T as float16; scores are computed with exactly what is saved)."""
    if not 0.0 < shrink <= 1.0:
        raise ValueError("WCCN shrinkage must be in (0, 1]")
    lam, vecs = np.linalg.eigh(sw)
    lam = np.maximum(lam, 0.0)
    scale = (1.0 - shrink) * lam + shrink * lam.sum() / len(lam)
    if scale.min() <= 0.0:
        raise ValueError("WCCN: the features have no within-emoji variance")
    t = (vecs / np.sqrt(scale)) @ vecs.T
    return t.astype(np.float16).astype(np.float32)


def nearest_mean_accuracy(
    train: Scatter,
    x: npt.NDArray[np.float32],
    key_ids: npt.NDArray[np.int64],
    shrink: float,
) -> float:
    """Top-1 emoji accuracy of cosine nearest-class-mean on x (rows whose emoji `train` has),
    after centring on train's mean row and whitening with `shrink`."""
    t = whitening(within_covariance(train), shrink).astype(np.float64)
    seen = train.counts > 0
    mu = train.total / train.n
    centres = (train.sums[seen] / train.counts[seen][:, None] - mu) @ t
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    known = seen[key_ids]
    if not known.any():
        raise ValueError("WCCN: the left-out style shares no emoji with the others")
    q = (x[known].astype(np.float64) - mu) @ t
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    pred = np.flatnonzero(seen)[np.argmax(q @ centres.T, axis=1)]
    return float(np.mean(pred == key_ids[known]))


@dataclass(frozen=True)
class StyleRows:
    """One training style: the scatter of all its rows (every view) and its pictures as drawn."""

    scatter: Scatter
    x_base: npt.NDArray[np.float32]
    base_ids: npt.NDArray[np.int64]


def choose_shrink(
    styles: Mapping[str, StyleRows], grid: Sequence[float]
) -> tuple[float, dict[float, float]]:
    """The shrinkage with the best mean inner leave-one-style-out nearest-mean accuracy (ties:
    the larger, the milder change), and every grid value's accuracy."""
    if len(styles) < 2:
        raise ValueError("WCCN: choosing the shrinkage needs at least two training styles")
    names = list(styles)
    accuracy = {}
    for shrink in grid:
        per_style = [
            nearest_mean_accuracy(
                _pooled([styles[o].scatter for o in names if o != held]),
                styles[held].x_base,
                styles[held].base_ids,
                shrink,
            )
            for held in names
        ]
        accuracy[shrink] = float(np.mean(per_style))
    best = max(grid, key=lambda s: (round(accuracy[s], 6), s))
    return best, accuracy


def fit_whitening(styles: Mapping[str, StyleRows], shrink: float) -> npt.NDArray[np.float32]:
    """T from every given style's rows at `shrink`."""
    return whitening(within_covariance(_pooled([s.scatter for s in styles.values()])), shrink)
