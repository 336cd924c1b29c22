"""Multinomial softmax regression on embeddings, in numpy: class weights, L2, accelerated
full-batch gradient descent. Features are standardised while fitting and the scaling is folded
back into (W, b), so the served head is one MatMul + Add + Softmax on the unit embedding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Below this, a feature's spread is noise: floor it so that standardising never blows it up.
_SD_FLOOR_RATIO = 1e-2


@dataclass(frozen=True)
class Head:
    """logits = x @ weights + bias on L2-normalised embeddings x."""

    weights: F64  # d x C
    bias: F64  # C
    l2: float
    iterations: int

    @property
    def num_classes(self) -> int:
        return int(self.bias.shape[0])

    def predict_proba(self, x: npt.NDArray[np.floating]) -> F64:
        return softmax(np.asarray(x, dtype=np.float64) @ self.weights + self.bias)


def softmax(logits: F64) -> F64:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: F64 = e / e.sum(axis=1, keepdims=True)
    return out


def unit(x: npt.NDArray[np.floating]) -> F64:
    """Rows scaled to unit length (what the catalog stores and the head graph computes)."""
    v = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    out: F64 = v / np.maximum(n, 1e-12)
    return out


def balanced_weights(y: I64, num_classes: int) -> F64:
    """Per-sample weights n / (C * n_c): every class counts the same in the loss."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    per_class = len(y) / (num_classes * np.maximum(counts, 1.0))
    out: F64 = per_class[y]
    return out


def fit_head(
    x: npt.NDArray[np.floating],
    y: I64,
    num_classes: int,
    *,
    l2: float,
    sample_weight: F64 | None = None,
    max_iter: int = 400,
    tol: float = 1e-4,
    should_stop: Callable[[], bool] | None = None,
) -> Head:
    """Minimise weighted mean cross-entropy + l2/2 * ||W||^2 (bias unpenalised) over the
    standardised features; Nesterov momentum with adaptive restart, step 1/L."""
    xs = np.asarray(x, dtype=np.float64)
    n, d = xs.shape
    w = balanced_weights(y, num_classes) if sample_weight is None else sample_weight
    w = w / w.sum()
    mu = (w[:, None] * xs).sum(axis=0)
    sd = np.sqrt((w[:, None] * (xs - mu) ** 2).sum(axis=0))
    sd = np.maximum(sd, _SD_FLOOR_RATIO * float(sd.mean()) + 1e-12)
    # float32 for the loop: half the memory traffic of float64, same answer to ~1e-6.
    z = ((xs - mu) / sd).astype(np.float32)
    w32 = w.astype(np.float32)
    rows = np.arange(n)
    onehot = np.zeros((n, num_classes), dtype=np.float32)
    onehot[rows, y] = 1.0
    # Lipschitz constant of the gradient: softmax CE curvature <= 1/2 times the weighted
    # second moment of [z, 1]; its top eigenvalue by a few power iterations.
    lip = 0.5 * _top_eigenvalue(z, w) + l2
    step = np.float32(1.0 / lip)

    def grad(wt: F32, bt: F32) -> tuple[F32, F32, float]:
        logits = z @ wt + bt
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        p = e / e.sum(axis=1, keepdims=True)
        r = (p - onehot) * w32[:, None]
        loss = float(-(w * np.log(p[rows, y].astype(np.float64) + 1e-30)).sum())
        loss += 0.5 * l2 * float((wt * wt).sum())
        return z.T @ r + np.float32(l2) * wt, r.sum(axis=0), loss

    wt = np.zeros((d, num_classes), dtype=np.float32)
    bt = np.zeros(num_classes, dtype=np.float32)
    vw, vb = wt.copy(), bt.copy()
    t = 1.0
    prev_loss = np.inf
    it = 0
    for it in range(1, max_iter + 1):
        gw, gb, loss = grad(vw, vb)
        new_w = vw - step * gw
        new_b = vb - step * gb
        if loss > prev_loss:  # adaptive restart: momentum overshot
            t = 1.0
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        beta = np.float32((t - 1.0) / t_next)
        vw = new_w + beta * (new_w - wt)
        vb = new_b + beta * (new_b - bt)
        # Stop on a small gradient (a float32 weight difference can round to 0 too early).
        small = float(np.abs(gw).max()) < tol and float(np.abs(gb).max()) < tol
        wt, bt, t, prev_loss = new_w, new_b, t_next, loss
        if small or (should_stop is not None and it % 25 == 0 and should_stop()):
            break
    # Fold the standardisation into the served weights: z = (x - mu) / sd.
    weights = wt.astype(np.float64) / sd[:, None]
    bias = bt.astype(np.float64) - mu @ weights
    return Head(weights=weights, bias=bias, l2=l2, iterations=it)


def _top_eigenvalue(z: F32, w: F64, rounds: int = 30) -> float:
    aug = np.hstack([z, np.ones((z.shape[0], 1))])
    v = np.ones(aug.shape[1]) / np.sqrt(aug.shape[1])
    lam = 1.0
    for _ in range(rounds):
        u = aug.T @ (w * (aug @ v))
        lam = float(np.linalg.norm(u))
        if lam == 0.0:
            return 1.0
        v = u / lam
    return lam * 1.05  # a little margin: power iteration approaches from below
