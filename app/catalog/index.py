"""Catalog index settings, the readers-writer lock, and HnswIndex: faiss HNSW for large catalogs.

A cache only: SQLite holds the truth and the index is rebuilt or caught up from it. Ids are
the store's integer item keys. Catalogs up to IndexConfig.hnsw_threshold are searched exactly
in numpy (app.catalog.flat); larger ones by an HNSW graph here. Graphs cannot drop nodes, so
removed ids become tombstones excluded through a faiss IDSelector until the next rebuild.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from app.catalog.types import Vector

IndexKind = Literal["flat", "hnsw"]
Ids = npt.NDArray[np.int64]


class _Faiss:
    """faiss, imported on first use: a server that has no catalog index yet need not hold it
    (14 MiB per worker; only HNSW catalogs need it). Typed Any: faiss's SWIG stubs miss most of what is used here."""

    def __getattr__(self, name: str) -> Any:
        import faiss as module

        return getattr(module, name)


faiss: Any = _Faiss()
_MAGIC = b"IMGCLASS-FAISS-1\n"
_ADD_CHUNK = 50_000
# Single-query searches are fastest on one OpenMP thread: waking a team costs more than the
# scan (measured: 20x slower on 2 cores), and concurrent requests use the cores anyway. Bulk
# adds (HNSW builds) use every core. The OpenMP thread count is per calling thread, so each
# call sets it for the thread it runs on (request threads start with "all cores").
_BULK = 10_000


@contextmanager
def _all_cores(n: int) -> Iterator[None]:
    if n < _BULK:
        yield
        return
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(1)


@dataclass(frozen=True)
class IndexConfig:
    """How indexes are built. `kind` forces one kind ("auto" picks by size)."""

    kind: Literal["auto", "flat", "hnsw"] = "auto"
    hnsw_threshold: int = 200_000  # items above which "auto" builds HNSW
    hnsw_m: int = 32
    ef_construction: int = 100
    ef_search: int = 256
    # Filtered HNSW searches over at most this many candidates are done exactly instead.
    exact_subset_max: int = 20_000

    def kind_for(self, n: int) -> IndexKind:
        if self.kind != "auto":
            return self.kind
        return "hnsw" if n > self.hnsw_threshold else "flat"


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class HnswIndex:
    """Not thread-safe on its own: the store serialises writers against readers."""

    kind: Literal["hnsw"] = "hnsw"

    def __init__(self, dim: int, cfg: IndexConfig) -> None:
        self.dim = dim
        self.cfg = cfg
        inner = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = cfg.ef_construction
        inner.hnsw.efSearch = cfg.ef_search
        self._inner = inner
        self.index: Any = faiss.IndexIDMap2(inner)
        self.tombstones: set[int] = set()

    @property
    def live(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones)

    def add(self, ids: Ids, vectors: Vector) -> None:
        if not len(ids):
            return
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors {vectors.shape} do not fit {len(ids)} ids x {self.dim}")
        with _all_cores(len(ids)):
            for start in range(0, len(ids), _ADD_CHUNK):
                end = start + _ADD_CHUNK
                self.index.add_with_ids(
                    np.ascontiguousarray(vectors[start:end], dtype=np.float32),
                    np.ascontiguousarray(ids[start:end], dtype=np.int64),
                )

    def remove(self, ids: Ids) -> None:
        self.tombstones.update(int(i) for i in ids)

    def all_ids(self) -> Ids:
        ids: Ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        if self.tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self.tombstones, np.int64))]
        return ids

    # search -------------------------------------------------------------------------------
    def search(
        self, queries: Vector, k: int, allowed: Ids | None = None
    ) -> list[tuple[Ids, Vector]]:
        """Per query row: (ids, scores) best first, at most k, exactly min(k, candidates)."""
        faiss.omp_set_num_threads(1)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None:
            if self.tombstones:
                allowed = allowed[~np.isin(allowed, np.fromiter(self.tombstones, np.int64))]
            want = min(k, len(allowed))
            if want == 0:
                return [_empty() for _ in range(len(q))]
            if len(allowed) <= self.cfg.exact_subset_max:
                return self._exact(q, want, allowed)
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            return self._hnsw(q, want, sel, fallback=allowed)
        want = min(k, self.live)
        if want == 0:
            return [_empty() for _ in range(len(q))]
        return self._hnsw(q, want, None, fallback=None)

    def _hnsw(
        self, q: Vector, want: int, sel: Any, fallback: Ids | None
    ) -> list[tuple[Ids, Vector]]:
        keep: list[Any] = [sel]  # the selectors must outlive the search call
        if self.tombstones:
            dead = faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64))
            not_dead = faiss.IDSelectorNot(dead)
            keep += [dead, not_dead]
            sel = not_dead if sel is None else faiss.IDSelectorAnd(sel, not_dead)
            keep.append(sel)
        params = faiss.SearchParametersHNSW(efSearch=max(self.cfg.ef_search, 2 * want))
        if sel is not None:
            params.sel = sel
        scores, ids = self.index.search(q, want, params=params)
        rows = _rows(scores, ids)
        del keep
        # A restrictive selector can leave the graph walk short of k: redo those exactly.
        for i, (row_ids, _) in enumerate(rows):
            if len(row_ids) < want:
                candidates = fallback if fallback is not None else self.all_ids()
                rows[i] = self._exact(q[i : i + 1], want, candidates)[0]
        return rows

    def _exact(self, q: Vector, want: int, candidates: Ids) -> list[tuple[Ids, Vector]]:
        cand = np.ascontiguousarray(candidates, dtype=np.int64)
        vecs = np.asarray(self.index.reconstruct_batch(cand), dtype=np.float32)
        sims = q @ vecs.T
        out: list[tuple[Ids, Vector]] = []
        for row in sims:
            top = np.argpartition(-row, want - 1)[:want] if want < len(row) else np.arange(len(row))
            order = top[np.argsort(-row[top], kind="stable")]
            out.append((cand[order], row[order].astype(np.float32)))
        return out

    # persistence --------------------------------------------------------------------------
    def to_bytes(self, header: dict[str, Any]) -> bytes:
        head = dict(header, kind=self.kind, dim=self.dim, tombstones=sorted(self.tombstones))
        blob = faiss.serialize_index(self.index)
        return _MAGIC + json.dumps(head).encode() + b"\n" + np.asarray(blob).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, cfg: IndexConfig) -> tuple[HnswIndex, dict[str, Any]]:
        if not data.startswith(_MAGIC):
            raise ValueError("not an index snapshot")
        nl = data.index(b"\n", len(_MAGIC))
        head: dict[str, Any] = json.loads(data[len(_MAGIC) : nl])
        if head.get("kind") != "hnsw":  # only graphs are saved; flat ones rebuild from SQLite
            raise ValueError(f"an index snapshot of kind {head.get('kind')!r}")
        self = cls.__new__(cls)
        self.dim = int(head["dim"])
        self.cfg = cfg
        self.index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8, offset=nl + 1))
        self._inner = faiss.downcast_index(self.index.index)
        self._inner.hnsw.efSearch = cfg.ef_search
        self.tombstones = {int(i) for i in head["tombstones"]}
        return self, head


def _empty() -> tuple[Ids, Vector]:
    return np.empty(0, np.int64), np.empty(0, np.float32)


def _rows(scores: Any, ids: Any) -> list[tuple[Ids, Vector]]:
    out: list[tuple[Ids, Vector]] = []
    for s, i in zip(np.asarray(scores, np.float32), np.asarray(ids, np.int64), strict=True):
        ok = i >= 0
        out.append((i[ok], s[ok]))
    return out
