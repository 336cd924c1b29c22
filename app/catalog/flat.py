"""FlatIndex: exact inner-product search of a catalog in numpy (no faiss).

The catalogs "auto" keeps exact (up to IndexConfig.hnsw_threshold items) are scored with one
matrix product per block of rows. faiss was held for this before: 27 MiB per worker for the
shipped 10,000-item `products` catalog (its library 14, its index 13, vectors 10), against the
vectors alone here; faiss is now imported only for HNSW (app.catalog.index).

Rows live in blocks of at most BLOCK_ROWS, so an add copies at most one block (never the
whole catalog) and a search scores a block at a time: one float32 matrix product finds the
candidates (every row within float32's rounding of the k-th best), which are then scored again
in float64. A query's answer is therefore the same alone or in a batch (BLAS rounds a matrix
product and a matrix-vector product differently), and equal scores keep insertion order (store
ids ascend with insertion).
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from app.catalog.index import Ids, IndexConfig
from app.catalog.types import Vector

BLOCK_ROWS: Final = 16_384  # a block of 1280-d vectors is 80 MiB; a 32-query batch scores 2 MiB
# float32 rounding of a d-term dot product stays well within d * 2**-22 * |q| * |v|
_ROUNDING: Final = 2.0**-22


class FlatIndex:
    """Not thread-safe on its own: the store serialises writers against readers."""

    kind: Literal["flat"] = "flat"

    def __init__(self, dim: int, cfg: IndexConfig) -> None:
        self.dim = dim
        self.cfg = cfg
        self._ids: list[Ids] = []
        self._vecs: list[Vector] = []
        self._norms: list[float] = []  # the longest vector's length in each block
        self.tombstones: set[int] = set()  # removals drop rows here: always empty

    @property
    def live(self) -> int:
        return sum(len(ids) for ids in self._ids)

    def add(self, ids: Ids, vectors: Vector) -> None:
        if not len(ids):
            return
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors {vectors.shape} do not fit {len(ids)} ids x {self.dim}")
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        start = 0
        if self._ids and len(self._ids[-1]) < BLOCK_ROWS:  # top up the last block
            start = BLOCK_ROWS - len(self._ids[-1])
            self._ids[-1] = np.concatenate([self._ids[-1], ids[:start]])
            self._vecs[-1] = np.concatenate([self._vecs[-1], vectors[:start]])
            self._norms[-1] = _longest(self._vecs[-1])
        for at in range(start, len(ids), BLOCK_ROWS):
            self._ids.append(ids[at : at + BLOCK_ROWS].copy())
            self._vecs.append(np.array(vectors[at : at + BLOCK_ROWS], dtype=np.float32))
            self._norms.append(_longest(self._vecs[-1]))

    def remove(self, ids: Ids) -> None:
        if not len(ids):
            return
        gone = np.asarray(ids, dtype=np.int64)
        for i, block in enumerate(self._ids):
            keep = ~np.isin(block, gone)
            if not keep.all():
                self._ids[i], self._vecs[i] = block[keep], self._vecs[i][keep]
        kept = [i for i, block in enumerate(self._ids) if len(block)]
        self._ids = [self._ids[i] for i in kept]
        self._vecs = [self._vecs[i] for i in kept]
        self._norms = [self._norms[i] for i in kept]  # an upper bound still

    def all_ids(self) -> Ids:
        return np.concatenate(self._ids) if self._ids else np.empty(0, np.int64)

    def search(
        self, queries: Vector, k: int, allowed: Ids | None = None
    ) -> list[tuple[Ids, Vector]]:
        """Per query row: (ids, scores) best first, exactly min(k, candidates)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        q64 = q.astype(np.float64)
        slack = _ROUNDING * self.dim * np.linalg.norm(q64, axis=1)
        best: list[tuple[Ids, Exact]] = [
            (np.empty(0, np.int64), np.empty(0, np.float64)) for _ in range(len(q))
        ]
        wanted = None if allowed is None else np.asarray(allowed, dtype=np.int64)
        blocks = zip(self._ids, self._vecs, self._norms, strict=True) if k > 0 else iter(())
        for ids, vecs, norm in blocks:
            if wanted is not None:
                mask = np.isin(ids, wanted)
                if not mask.any():
                    continue
                ids, vecs = ids[mask], vecs[mask]
            rough = q @ vecs.T
            for row, (found, found_scores) in enumerate(best):
                near = _near(rough[row], k, slack[row] * norm)
                exact = vecs[near].astype(np.float64) @ q64[row]
                best[row] = _top(
                    np.concatenate([found, ids[near]]), np.concatenate([found_scores, exact]), k
                )
        return [(ids, scores.astype(np.float32)) for ids, scores in best]


Exact = npt.NDArray[np.float64]


def _near(rough: Vector, k: int, slack: float) -> npt.NDArray[np.intp]:
    """Rows whose rough score may be among the k best once rounding is undone."""
    if k >= len(rough):
        return np.arange(len(rough))
    kth = np.partition(rough, len(rough) - k)[len(rough) - k]
    return np.flatnonzero(rough >= kth - slack)


def _longest(vecs: Vector) -> float:
    """An upper bound, computed without a float64 copy of the block."""
    return float(np.sqrt(np.einsum("ij,ij->i", vecs, vecs).max())) * 1.001 if len(vecs) else 0.0


def _top(ids: Ids, scores: Exact, k: int) -> tuple[Ids, Exact]:
    """The k highest scores, best first; equal scores in the order given (insertion)."""
    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th highest
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)[: k - len(above)]  # the first given of the ties
        keep = np.sort(np.concatenate([above, tied]))
        ids, scores = ids[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    return ids[order], scores[order]
