"""FlatIndex (numpy exact search): the same answers as brute force, across blocks, with
filters, removals and ties; and a flat catalog never imports faiss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.catalog import flat
from app.catalog.flat import FlatIndex
from app.catalog.index import IndexConfig
from tests.app.catalog.conftest import unit

CFG = IndexConfig(kind="flat")


def brute(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[list[int]]:
    sims = q.astype(np.float64) @ vecs.astype(np.float64).T
    return [ids[np.argsort(-row, kind="stable")[:k]].tolist() for row in sims]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flat, "BLOCK_ROWS", 64)  # many blocks from a few hundred rows


@pytest.mark.usefixtures("small_blocks")
def test_answers_equal_brute_force_across_blocks_and_adds() -> None:
    rng = np.random.default_rng(0)
    vecs, ids = unit(rng, 500, 16), np.arange(10, 510, dtype=np.int64)
    index = FlatIndex(16, CFG)
    for start, end in ((0, 3), (3, 70), (70, 200), (200, 500)):  # tops up, then new blocks
        index.add(ids[start:end], vecs[start:end])
    assert index.live == 500 and index.all_ids().tolist() == ids.tolist()
    assert all(len(b) <= 64 for b in index._ids)
    q = unit(rng, 7, 16)
    found = index.search(q, 12)
    assert [f[0].tolist() for f in found] == brute(vecs, ids, q, 12)
    for row, (got_ids, scores) in enumerate(found):
        assert scores.dtype == np.float32 and list(scores) == sorted(scores, reverse=True)
        np.testing.assert_allclose(scores, vecs[got_ids - 10] @ q[row], rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("small_blocks")
def test_allowed_ids_removals_and_k_beyond_the_candidates() -> None:
    rng = np.random.default_rng(1)
    vecs, ids = unit(rng, 300, 8), np.arange(300, dtype=np.int64)
    index = FlatIndex(8, CFG)
    index.add(ids, vecs)
    q = vecs[:2]
    allowed = ids[ids % 7 == 0]
    got = index.search(q, 5, allowed=allowed)
    assert [g[0].tolist() for g in got] == brute(vecs[allowed], allowed, q, 5)
    few = np.array([3, 150, 299, 12345], np.int64)  # one id that is not there
    got_ids, _ = index.search(q[:1], 10, allowed=few)[0]
    assert sorted(got_ids.tolist()) == [3, 150, 299]
    assert index.search(q, 5, allowed=np.array([12345], np.int64))[0][0].size == 0
    index.remove(np.arange(0, 300, 2, dtype=np.int64))
    assert index.live == 150 and sorted(index.all_ids().tolist()) == list(range(1, 300, 2))
    keep = ids[1::2]
    assert [g[0].tolist() for g in index.search(q, 400)] == brute(vecs[keep], keep, q, 400)
    index.remove(ids)
    assert index.live == 0 and index.search(q, 3)[0][0].size == 0
    assert index.search(q, 0)[0][0].size == 0


@pytest.mark.usefixtures("small_blocks")
def test_equal_scores_come_in_insertion_order_even_at_the_cut() -> None:
    v = np.zeros((200, 4), np.float32)
    v[:, 0] = 1.0  # every row the same vector: every score ties
    index = FlatIndex(4, CFG)
    index.add(np.arange(1000, 1200, dtype=np.int64), v)
    got, scores = index.search(v[:1], 70)[0]
    assert got.tolist() == list(range(1000, 1070)) and set(scores.tolist()) == {1.0}


def test_wrong_shapes_are_refused() -> None:
    index = FlatIndex(8, CFG)
    with pytest.raises(ValueError, match="do not fit"):
        index.add(np.arange(3, dtype=np.int64), np.zeros((3, 7), np.float32))
    index.add(np.empty(0, np.int64), np.empty((0, 8), np.float32))
    assert index.live == 0 and index.all_ids().size == 0


def test_a_flat_catalog_is_built_and_searched_without_faiss(tmp_path: Path) -> None:
    """faiss costs 14 MiB per worker to import; catalogs under the HNSW size do not need it."""
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from app.catalog.embedded import EmbeddedStore\n"
        "from app.catalog.index import IndexConfig\n"
        "from tests.app.catalog.conftest import model_ref, new_items, unit\n"
        "store = EmbeddedStore(Path(sys.argv[1]), IndexConfig())\n"
        "store.open()\n"
        "store.create_catalog('c', model_ref())\n"
        "vecs = unit(np.random.default_rng(0), 50)\n"
        "store.add_items('c', new_items(vecs))\n"
        "hits = store.search('c', vecs[3:4], 5)[0]\n"
        "store.close()\n"
        "print(hits[0].item.id, 'faiss' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == ["it00003", "False"], out
