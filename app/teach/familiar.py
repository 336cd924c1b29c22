"""How alike a taught model's examples are to one another: the floor below which a new picture
is unlike anything the model was taught.

A head taught on a few classes answers one of them for every picture, a cup on a fruit model
included, often with a high score: its probabilities compare the classes with each other, not
the picture with what it was taught. Its examples say what "like them" means. For each example
(up to MAX_QUERIES, drawn at random), the cosine similarity to its nearest other example;
the FLOOR_QUANTILE of those is stored with the model (`metrics.extra.familiar_min_similarity`).
A picture whose nearest example in the model's own catalog, among the items labelled with one
of its classes, is less alike than that is `familiar: false` in predict answers
(app/api/predict_shapes.py): about FLOOR_QUANTILE of
pictures like the examples are flagged, by construction. `bench/teach_familiar.py` measures it
on pictures the model was not taught, of its classes and of others.
"""

from __future__ import annotations

from typing import Final

import numpy as np

FLOOR_KEY: Final = "familiar_min_similarity"  # where the floor is kept in metrics.extra
FLOOR_QUANTILE: Final = 0.01
COPY: Final = 0.99999  # this alike is the same picture (catalogs' duplicate rule), not a neighbour
MIN_EXAMPLES: Final = 10  # fewer: no floor (one example's neighbour says too little)
MAX_QUERIES: Final = 2000  # examples whose nearest neighbour is looked up (2,000 x n products)
CHUNK: Final = 256  # queries per matrix product (256 x 20,000 floats = 20 MB)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (as the catalogs store them); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def nearest_other(
    x: np.ndarray, queries: np.ndarray, groups: np.ndarray | None = None
) -> np.ndarray:
    """For each index in `queries`, the cosine similarity of that row of `x` (unit rows) to
    its most similar other row that is not a copy of it (-inf when every other row is one:
    examples sent twice made every example its copy's neighbour, and the floor 1.0, round 27)
    and, with `groups` (an id per row), not of its own group: variants of one picture (skin
    tones, a burst) are each other's neighbours as no new picture is one of theirs, and put
    the floor so high that most new pictures of the taught classes were flagged (round 31)."""
    out = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), CHUNK):
        out[start : start + CHUNK] = other_sims(x, queries[start : start + CHUNK], groups).max(1)
    return out


def other_sims(x: np.ndarray, rows: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarities of `rows` of `x` (unit rows) to every row, -inf where the other row
    is the row itself, a copy of it, or (with `groups`) of its own group."""
    sims: np.ndarray = x[rows] @ x.T
    sims[sims >= COPY] = -np.inf  # itself, and its copies
    if groups is not None:
        sims[groups[rows][:, None] == groups[None, :]] = -np.inf
    return sims


def familiar_floor(x: np.ndarray, seed: int = 0, groups: np.ndarray | None = None) -> float | None:
    """The FLOOR_QUANTILE of the examples' nearest-other-example similarities (examples of
    another group, with `groups`), or None with fewer than MIN_EXAMPLES examples."""
    n = len(x)
    if n < MIN_EXAMPLES:
        return None
    unit = unit_rows(x)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(n, MAX_QUERIES), replace=False))
    near = nearest_other(unit, queries, groups)
    near = near[np.isfinite(near)]  # an example with nothing but copies says nothing
    if len(near) < MIN_EXAMPLES:
        return None
    return float(np.quantile(near, FLOOR_QUANTILE))
