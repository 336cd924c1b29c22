"""Emoji-identity heads: a softmax over every emoji (skin tones merged) on the frozen features,
a task's score the log-odds of its emoji's summed probability.

A binary head lumps 22,000 non-birds into one class and has no reason to keep a whale, a
rabbit or a flexed arm apart from a bird it has not seen drawn this way. Here every emoji is
its own class (1,900 of them, each drawn in up to seven styles), so the features that separate
a polar bear from a dove are learned from the same emoji in other styles; "is it a bird" is
then P(any bird emoji) against P(any other emoji), like the ImageNet bird mass on photos.
Measured on bird (leave one style out, docs/drawings.md): far fewer non-birds above the birds
than the binary heads, at no cost in the server (one matrix product on the embedding).

The head is plain arrays (mean, scale, weights D x K, bias K, which classes are positive);
``folded`` gives the one affine map the composed graph applies (training.emoji.compose).
An optional WCCN transform (training.emoji.wccn) whitens the features first; it folds in too.
Weights are rounded to float16 when fitted, so the fold heads kept for CI (float16 on disk)
score exactly what was recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


def _logsumexp(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    top = z.max(axis=1, keepdims=True)
    return np.asarray(top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


@dataclass(frozen=True)
class IdentityHead:
    mean: npt.NDArray[np.float32]  # D: the training features' mean
    scale: npt.NDArray[np.float32]  # D: their standard deviation
    weights: npt.NDArray[np.float32]  # D x K (float16 values)
    bias: npt.NDArray[np.float32]  # K
    positive: npt.NDArray[np.bool_]  # K: the task's emoji (e.g. the birds)
    l2: float
    epochs: int
    use_mass: bool = False  # the compose/loso interface of a LinearHead (no mass feature)
    # D x D: features are multiplied by it before standardising (training.emoji.wccn), or None.
    transform: npt.NDArray[np.float32] | None = None
    shrink: float | None = None  # the WCCN shrinkage that made `transform`

    def class_logits(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        w, b = self.folded()
        return np.asarray(x.astype(np.float64) @ w + b)

    def logits(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """log P(a positive emoji) - log P(any other emoji)."""
        z = self.class_logits(x)
        return _logsumexp(z[:, self.positive]) - _logsumexp(z[:, ~self.positive])

    def score(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """P(a positive emoji): the positive classes' summed softmax probability."""
        return np.asarray(1.0 / (1.0 + np.exp(-self.logits(x))))

    def folded(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(W, b) with class logits = x @ W + b on raw features (the WCCN transform and the
        standardisation folded in)."""
        w = self.weights.astype(np.float64) / self.scale.astype(np.float64)[:, None]
        b = self.bias.astype(np.float64) - self.mean.astype(np.float64) @ w
        if self.transform is not None:
            w = self.transform.astype(np.float64) @ w
        return w, b

    def with_projection(self, projection: object) -> IdentityHead:
        if projection is not None:
            raise ValueError("identity heads read the features as they are (no projection)")
        return self


def fit_identity_head(
    x: npt.NDArray[np.float32],
    keys: Sequence[str],
    positive_keys: frozenset[str],
    *,
    l2: float,
    epochs: int,
    seed: int,
    batch: int = 256,
    lr: float = 1e-3,
) -> IdentityHead:
    """Softmax regression over the emoji in `keys` (one row each) on standardised features:
    Keras (Adam, L2 on the weights, seeded), the training extra's dependency."""
    import keras

    classes = sorted(set(keys))
    index = {k: i for i, k in enumerate(classes)}
    y = np.asarray([index[k] for k in keys], np.int64)
    positive = np.asarray([k in positive_keys for k in classes], bool)
    if not positive.any() or positive.all():
        raise ValueError("identity head: need emoji of the task and others to train on")
    mean = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale[scale < 1e-6] = 1.0
    z = ((x - mean) / scale).astype(np.float32)
    keras.utils.set_random_seed(seed)
    dense = keras.layers.Dense(len(classes), kernel_regularizer=keras.regularizers.l2(l2))
    model = keras.Sequential([keras.Input((x.shape[1],)), dense])
    model.compile(
        keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(z, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True)
    w, b = dense.get_weights()
    return IdentityHead(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=w.astype(np.float16).astype(np.float32),
        bias=b.astype(np.float32),
        positive=positive,
        l2=l2,
        epochs=epochs,
    )
