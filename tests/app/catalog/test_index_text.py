"""A catalog's `index` text says what is true before its first search: the kind its index will
be and when it is made (it said "faiss not loaded" for every catalog a restart had not searched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.catalog.embedded import EmbeddedStore
from app.catalog.index import IndexConfig
from tests.app.catalog.conftest import model_ref, new_items, unit


def test_the_index_text_names_the_kind_before_the_first_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vecs = unit(rng, 300)
    cfg = IndexConfig(kind="auto", hnsw_threshold=200, hnsw_m=16, ef_search=64)
    store = EmbeddedStore(tmp_path, cfg)
    store.open()
    store.create_catalog("small", model_ref())
    store.create_catalog("big", model_ref())
    assert store.get_catalog("small").index == "exact flat (built on the first search)"
    store.add_items("small", new_items(vecs[:100]))
    store.add_items("big", new_items(vecs))
    store.search("small", vecs[:1], 1)
    store.search("big", vecs[:1], 1)
    assert store.get_catalog("small").index == "exact flat"
    assert store.get_catalog("big").index == "faiss hnsw"
    store.close()  # writes the HNSW snapshot
    again = EmbeddedStore(tmp_path, cfg)
    again.open()
    try:
        assert again.get_catalog("small").index == "exact flat (built on the first search)"
        assert again.get_catalog("big").index == (
            "faiss hnsw (read from its snapshot on the first search)"
        )
        assert "not loaded" not in str([c.index for c in again.list_catalogs()])
        again.search("big", vecs[:1], 1)
        assert again.get_catalog("big").index == "faiss hnsw"
    finally:
        again.close()
