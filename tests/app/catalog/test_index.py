"""The HNSW (faiss) index and the embedded store's index life: HNSW recall, tombstones, snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.catalog import embedded
from app.catalog.embedded import EmbeddedStore
from app.catalog.index import HnswIndex, IndexConfig
from tests.app.catalog.conftest import model_ref, new_items, unit

HNSW = IndexConfig(kind="hnsw", hnsw_m=16, ef_search=64, exact_subset_max=50)


def exact_top(vecs: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :k]


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Embedding-like data: points around 20 centres, unit length."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_hnsw_recall_against_exact() -> None:
    vecs = clustered(5000, 32, seed=0)
    queries = clustered(200, 32, seed=1)
    index = HnswIndex(32, IndexConfig(kind="hnsw"))  # the served defaults
    index.add(np.arange(len(vecs), dtype=np.int64), vecs)
    truth = exact_top(vecs, queries, 10)
    found = index.search(queries, 10)
    recall = np.mean(
        [
            len(set(ids.tolist()) & set(t.tolist())) / 10
            for (ids, _), t in zip(found, truth, strict=True)
        ]
    )
    assert recall >= 0.95, recall


def test_hnsw_tombstones_and_restrictive_filters_still_give_k() -> None:
    rng = np.random.default_rng(2)
    vecs = unit(rng, 3000, 24)
    ids = np.arange(100, 3100, dtype=np.int64)
    index = HnswIndex(24, HNSW)
    index.add(ids, vecs)
    q = vecs[:1]
    assert index.search(q, 1)[0][0][0] == 100
    index.remove(np.array([100], np.int64))
    got, _ = index.search(q, 10)[0]
    assert 100 not in got and len(got) == 10 and index.live == 2999
    # 12 allowed ids (< k for the graph walk to find): exact fallback returns all of them
    allowed = ids[::250]
    got, scores = index.search(q, 20, allowed=allowed)[0]
    assert sorted(got.tolist()) == sorted(set(allowed.tolist()) - {100})
    assert list(scores) == sorted(scores, reverse=True)
    # a large filtered subset goes through the graph with a selector, still k results
    big = ids[ids % 3 == 0]
    got, _ = index.search(q, 10, allowed=big)[0]
    assert len(got) == 10 and set(got.tolist()) <= set(big.tolist()) - {100}


def test_snapshot_round_trip() -> None:
    rng = np.random.default_rng(3)
    vecs = unit(rng, 500, 8)
    index = HnswIndex(8, HNSW)
    index.add(np.arange(500, dtype=np.int64), vecs)
    index.remove(np.array([3], np.int64))
    copy, head = HnswIndex.from_bytes(index.to_bytes({"max_seq": 500}), HNSW)
    assert head["max_seq"] == 500 and copy.tombstones == {3} and copy.kind == "hnsw"
    a, b = index.search(vecs[:5], 5), copy.search(vecs[:5], 5)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))


def test_store_picks_index_kind_and_reloads_hnsw_from_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vecs = unit(rng, 300)
    cfg = IndexConfig(kind="auto", hnsw_threshold=200, hnsw_m=16, ef_search=64)
    store = EmbeddedStore(tmp_path, cfg)
    store.open()
    store.create_catalog("small", model_ref())
    store.create_catalog("big", model_ref())
    store.add_items("small", new_items(vecs[:100]))
    store.add_items("big", new_items(vecs))
    assert store.index_stats("small")["kind"] == "flat"
    assert store.index_stats("big")["kind"] == "hnsw"
    store.delete_item("big", "it00005")
    assert store.index_stats("big")["tombstones"] == 1
    store.close()  # writes the HNSW snapshot
    assert list((tmp_path / "index").glob("*.faiss"))
    again = EmbeddedStore(tmp_path, cfg)
    again.open()
    again.add_items("big", new_items(unit(rng, 2), prefix="new"))  # after the snapshot
    stats = again.index_stats("big")
    assert stats["kind"] == "hnsw" and stats["live"] == 301 and stats["items"] == 301
    ids = [h.item.id for h in again.search("big", vecs[5:6], 301)[0]]
    assert "it00005" not in ids and "new00001" in ids and len(ids) == 301
    again.close()


def test_a_snapshot_of_another_kind_than_the_settings_say_is_not_used(tmp_path: Path) -> None:
    """Round 29: IMGCLASS_INDEX_KIND=flat (or a higher threshold) after a run that saved an
    HNSW snapshot still served the approximate index from the snapshot."""
    rng = np.random.default_rng(6)
    vecs = unit(rng, 300)
    store = EmbeddedStore(tmp_path, IndexConfig(kind="auto", hnsw_threshold=200, hnsw_m=16))
    store.open()
    store.create_catalog("big", model_ref())
    store.add_items("big", new_items(vecs))
    assert store.index_stats("big")["kind"] == "hnsw"
    store.close()  # writes the HNSW snapshot
    assert list((tmp_path / "index").glob("*.faiss"))
    for cfg in (IndexConfig(kind="flat"), IndexConfig(kind="auto", hnsw_threshold=200_000)):
        again = EmbeddedStore(tmp_path, cfg)
        again.open()
        assert again.index_stats("big")["kind"] == "flat"
        top = [h.item.id for h in again.search("big", vecs[7:8], 10)[0]]
        assert top == [f"it{i:05d}" for i in exact_top(vecs, vecs[7:8], 10)[0]]
        again.close()
    assert not list((tmp_path / "index").glob("*.faiss"))  # the stale snapshot is gone


def test_flat_catalog_is_promoted_to_hnsw_when_it_grows(tmp_path: Path) -> None:
    import time

    rng = np.random.default_rng(5)
    store = EmbeddedStore(tmp_path, IndexConfig(kind="auto", hnsw_threshold=100, hnsw_m=8))
    store.open()
    store.create_catalog("c", model_ref())
    store.add_items("c", new_items(unit(rng, 50)))
    assert store.index_stats("c")["kind"] == "flat"
    store.add_items("c", new_items(unit(rng, 200), prefix="more"))
    store.index_stats("c")  # sees the growth and starts the background build
    deadline = time.monotonic() + 30
    while store.index_stats("c")["kind"] != "hnsw":
        assert time.monotonic() < deadline, "HNSW build did not finish"
        time.sleep(0.05)
    assert len(store.search("c", unit(rng, 1), 250)[0]) == 250
    store.close()


def test_a_search_racing_deletes_still_returns_k(tmp_path: Path, monkeypatch: Any) -> None:
    # Items deleted between the index search and the row fetch used to drop out of the
    # answer (fewer than k hits though plenty were left). The delete here happens exactly
    # there, through the store itself, as another request's would.
    rng = np.random.default_rng(11)
    vecs = unit(rng, 100)
    store = EmbeddedStore(tmp_path, IndexConfig())
    store.open()
    store.create_catalog("c", model_ref())
    store.add_items("c", new_items(vecs))
    q = vecs[:1]
    nearest = [h.item.id for h in store.search("c", q, 10)[0]]
    fetch = embedded.items_by_seq
    deleted: list[str] = []

    def racing(conn: Any, seqs: list[int]) -> Any:
        if not deleted:
            for item_id in nearest[:3]:
                store.delete_item("c", item_id)
                deleted.append(item_id)
        return fetch(conn, seqs)

    monkeypatch.setattr(embedded, "items_by_seq", racing)
    hits = [h.item.id for h in store.search("c", q, 10)[0]]
    assert deleted and len(hits) == 10, hits
    assert not set(deleted) & set(hits) and hits[:7] == nearest[3:]
    store.close()
