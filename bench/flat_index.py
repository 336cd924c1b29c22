"""Exact catalog search: the numpy FlatIndex the server uses against faiss's IndexFlatIP.

Both in this process, on the same random unit vectors, interleaved: the time to add them, to
answer one query and a batch of 32 (k=10), and whether the answers agree. Both hold the
vectors once (float32); what a worker saves is faiss's import, printed first.

Usage: .venv/bin/python -m bench.flat_index [--runs 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.catalog.flat import FlatIndex
from app.catalog.index import IndexConfig

SIZES = ((10_000, 256, "the shipped products catalog's shape"), (100_000, 1280, "imagenet-size"))


def rss() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def best_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    runs = ap.parse_args().runs
    before = rss()
    import faiss

    print(f"faiss import: +{rss() - before:.1f} MiB RSS")
    faiss.omp_set_num_threads(1)  # as the server searched with it
    print(f"{'catalog':>14} {'what':>14} {'faiss':>10} {'numpy':>10} {'ratio':>6}")
    for n, dim, what in SIZES:
        compare(faiss, n, dim, what, runs)


def compare(faiss: Any, n: int, dim: int, what: str, runs: int) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(1, n + 1, dtype=np.int64)
    noise = 0.1 * rng.standard_normal((32, dim)).astype(np.float32)
    queries = vecs[rng.integers(0, n, 32)] + noise
    fx = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    t = time.perf_counter()
    fx.add_with_ids(vecs, ids)
    f_add = (time.perf_counter() - t) * 1e3
    nx = FlatIndex(dim, IndexConfig(kind="flat"))
    t = time.perf_counter()
    nx.add(ids, vecs)
    n_add = (time.perf_counter() - t) * 1e3
    label = f"{n:,} x {dim}"
    rows = [("add ms", f_add, n_add)]
    for q, name in ((queries[:1], "1 query"), (queries, "32 queries")):
        f_ms = best_ms(partial(fx.search, q, 10), runs)
        n_ms = best_ms(partial(nx.search, q, 10), runs)
        rows.append((f"{name} ms", f_ms, n_ms))
    for name, f, v in rows:
        print(f"{label:>14} {name:>14} {f:10.2f} {v:10.2f} {v / f:6.2f}")
    _, f_ids = fx.search(queries, 10)
    found = nx.search(queries, 10)
    same = sum(list(a) == b[0].tolist() for a, b in zip(f_ids, found, strict=True))
    print(f"{label:>14} same top-10 lists: {same}/32 ({what})")


if __name__ == "__main__":
    main()
