"""Copies of one picture in an add (`skip_duplicates=true`): an item whose embedding is the same
as an item's of the same label, already in the catalog or earlier in the same request.

"The same" is cosine >= DUPLICATE_COSINE, not bitwise equality: a catalog item's vector comes
back from the store after a float32 round trip (and, on Milvus, an inner product computed by
its own kernels), and a picture re-sent in another batch may be embedded by other kernels
(batch size), so a copy's score is 1 within a few float32 steps (1e-7), not exactly 1. The
threshold leaves 100x that margin and is far above what two different pictures score (see
docs/similarity.md for the figures).

It needs no storage change and works the same on every CatalogStore: one batched k=1 search
through the store's own `search` for the whole request settles every picture that has no copy
or whose nearest copy has its label; only a picture copied under another label costs one more
search (per label: with the label filter; unlabelled: unfiltered, a little deeper).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from app.catalog.store import CatalogStore
from app.catalog.types import Vector

DUPLICATE_COSINE: Final = 0.99999
# Unlabelled items: neighbours fetched at first, and the most ever (Milvus caps topk at 16,384).
_FIRST_K: Final = 4
_MAX_K: Final = 16_384


@dataclass(frozen=True)
class Match:
    """Item `index` of the request is a copy of `item_id` (stored, or added by this request)."""

    index: int
    label: str | None  # as stored: trimmed, NFC
    item_id: str
    score: float
    in_request: bool


def find_duplicates(
    store: CatalogStore,
    name: str,
    vectors: Vector,
    labels: Sequence[str | None],
    ids: Sequence[str],
) -> dict[int, Match]:
    """The request's items that copy another item with the same label, by their index: first
    against the catalog, then against the earlier items of the request that are not copies
    themselves. `ids` are the ids the items would get."""
    found: dict[int, Match] = {}
    # One unfiltered k=1 search settles most rows: a top score under the threshold means no
    # item of any label is a copy; a copy on top with the same label is the answer.
    unsure: dict[str | None, list[int]] = {}
    top = store.search(name, vectors, 1, fresh=True)
    for i, (label, first) in enumerate(zip(labels, top, strict=True)):
        if not first or first[0].score < DUPLICATE_COSINE:
            continue
        if first[0].item.label == label:
            found[i] = Match(i, label, first[0].item.id, first[0].score, False)
        else:  # a copy under another label: look among this label's items
            unsure.setdefault(label, []).append(i)
    for label, rows in unsure.items():
        if label is None:
            found.update(_unlabelled(store, name, vectors, rows))
            continue
        filtered = store.search(name, vectors[rows], 1, label=label, fresh=True)
        for i, row_hits in zip(rows, filtered, strict=True):
            if row_hits and row_hits[0].score >= DUPLICATE_COSINE:
                found[i] = Match(i, label, row_hits[0].item.id, row_hits[0].score, False)
    by_label: dict[str | None, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for label, rows in by_label.items():
        kept: list[int] = []
        for i in rows:
            if i in found:
                continue
            if kept:
                scores = vectors[kept] @ vectors[i]
                best = int(np.argmax(scores))
                if scores[best] >= DUPLICATE_COSINE:
                    j = kept[best]
                    found[i] = Match(i, label, ids[j], float(scores[best]), True)
                    continue
            kept.append(i)
    return dict(sorted(found.items()))


def _unlabelled(
    store: CatalogStore, name: str, vectors: Vector, rows: list[int]
) -> dict[int, Match]:
    """The store's label filter cannot ask for "no label": search unfiltered and take the first
    unlabelled hit at the threshold, looking deeper (k x 8) only for rows whose every hit so
    far is a copy under some label."""
    found: dict[int, Match] = {}
    pending, k = rows, _FIRST_K
    while pending:
        hits = store.search(name, vectors[pending], k, fresh=True)
        deeper: list[int] = []
        for i, row_hits in zip(pending, hits, strict=True):
            copies = [h for h in row_hits if h.score >= DUPLICATE_COSINE]
            same = next((h for h in copies if h.item.label is None), None)
            if same is not None:
                found[i] = Match(i, None, same.item.id, same.score, False)
            elif len(copies) == k == len(row_hits) and k < _MAX_K:
                deeper.append(i)
        pending, k = deeper, min(k * 8, _MAX_K)
    return found
