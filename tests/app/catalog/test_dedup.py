"""app.catalog.dedup on the real stores (embedded and Milvus): copies are found through the
store's own search, per label, in the catalog and earlier in the request."""

from __future__ import annotations

import numpy as np

from app.catalog.dedup import DUPLICATE_COSINE, find_duplicates
from app.catalog.store import CatalogStore
from tests.app.catalog.conftest import StoreFactory, model_ref, new_items, unit


def test_copies_are_found_per_label_in_the_catalog_and_the_request(store: CatalogStore) -> None:
    rng = np.random.default_rng(7)
    stored = unit(rng, 6)
    store.create_catalog("c", model_ref())
    labels = ["cat", "cat", "dog", None, None, None]
    store.add_items("c", new_items(stored, labels=labels))
    fresh = unit(rng, 2)
    # A copy whose float32 value is a rounding step off (another batch, another kernel).
    nudged = stored[1] + np.float32(1e-7)
    queries = np.stack(
        [
            stored[0],  # 0: copy of it00000 (cat)
            stored[0],  # 1: the same picture as dog: not a copy (other label)
            nudged / np.linalg.norm(nudged),  # 2: copy of it00001 (cat)
            fresh[0],  # 3: new
            fresh[0],  # 4: new, but a copy of 3 (same label, earlier in the request)
            stored[3],  # 5: copy of the unlabelled it00003
            fresh[1],  # 6: new, unlabelled
            fresh[1],  # 7: copy of 6, unlabelled
            stored[2],  # 8: it00002 is a dog, this one is unlabelled: not a copy
        ]
    ).astype(np.float32)
    qlabels = ["cat", "dog", "cat", "cat", "cat", None, None, None, None]
    ids = [f"new{i}" for i in range(len(queries))]
    found = find_duplicates(store, "c", queries, qlabels, ids)
    assert {i: m.item_id for i, m in found.items()} == {
        0: "it00000",
        2: "it00001",
        4: "new3",
        5: "it00003",
        7: "new6",
    }
    assert all(m.score >= DUPLICATE_COSINE for m in found.values())
    assert [m.in_request for m in found.values()] == [False, False, True, False, True]
    assert found[0].label == "cat" and found[5].label is None
    # Nothing is a copy of a different picture, and an empty catalog has no copies.
    assert find_duplicates(store, "c", unit(rng, 3), ["cat", None, "dog"], ["a", "b", "c"]) == {}
    store.create_catalog("empty", model_ref())
    assert find_duplicates(store, "empty", queries[:2], ["cat", None], ["a", "b"]) == {}


def test_an_unlabelled_copy_is_found_behind_many_labelled_ones(store: CatalogStore) -> None:
    """The label filter cannot ask for "no label": the unfiltered search looks deeper while
    every hit is a copy under another label."""
    rng = np.random.default_rng(3)
    v = unit(rng, 1)
    store.create_catalog("c", model_ref())
    copies = np.repeat(v, 9, axis=0)
    store.add_items("c", new_items(copies, labels=[f"l{i}" for i in range(9)]))
    assert find_duplicates(store, "c", v, [None], ["x"]) == {}
    store.add_items("c", new_items(v, prefix="bare"))
    found = find_duplicates(store, "c", v, [None], ["x"])
    assert [m.item_id for m in found.values()] == ["bare00000"]


def test_another_replica_sees_the_copies_at_once(make_store: StoreFactory) -> None:
    """Two stores on the same data (two processes, or two replicas on one Milvus): what one
    added is a copy for the other's check at once, and its image counts as in use (the blob
    collection asks), with no wait in between. The check reads `fresh` (Milvus: Strong)."""
    rng = np.random.default_rng(11)
    first, second = make_store(), make_store()
    stored = unit(rng, 3)
    first.create_catalog("shared", model_ref())
    items = new_items(stored, labels=["cat", "cat", "dog"])
    first.add_items("shared", items)
    found = find_duplicates(second, "shared", stored, ["cat", "cat", "dog"], ["a", "b", "c"])
    assert {i: m.item_id for i, m in found.items()} == {0: "it00000", 1: "it00001", 2: "it00002"}
    assert second.image_in_use(items[0].image.sha256)
