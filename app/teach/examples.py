"""The labelled examples of a catalog: its stored unit embeddings and labels, checked against
the teaching rules (at least 2 classes with 2+ distinct pictures each, class and item caps). No
image is decoded: the catalog already holds every item's vector."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from app.catalog.service import CatalogService
from app.catalog.types import CatalogRecord, ItemNotFound
from app.settings import Settings
from app.teach.errors import NotEnoughExamples, TeachCancelled, TeachLimitExceeded
from app.teach.head import F64, I64, unit
from app.teach.validate import copy_groups

MIN_CLASSES = 2
MIN_PER_CLASS = 2

ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class Limits:
    max_classes: int = 100
    max_items: int = 20_000


def limits_from(settings: Settings) -> Limits:
    return Limits(max_classes=settings.teach_max_classes, max_items=settings.teach_max_items)


@dataclass(frozen=True)
class Examples:
    x: F64  # n x d unit rows
    y: I64
    labels: tuple[str, ...]
    skipped_unlabelled: int
    groups: I64 | None = None  # per row, from `metadata.group`; None when no item has one
    names: tuple[str, ...] | None = None  # per row: `metadata.file` (zip uploads) or the item id
    backbone: str | None = None  # the model whose embeddings x holds (the catalog's)


def _never() -> bool:
    return False


def _sized_record(service: CatalogService, catalog: str, limits: Limits) -> CatalogRecord:
    """The catalog's record, refused when it holds more items than one teach job takes."""
    record = service.get(catalog)
    if record.item_count > limits.max_items:
        raise TeachLimitExceeded(
            f"Catalog {catalog!r} has {record.item_count:,} items; one teach job takes at most "
            f"{limits.max_items:,}.",
            limit_items=limits.max_items,
        )
    return record


def _checked_labels(names: Iterable[str], catalog: str, limits: Limits) -> tuple[str, ...]:
    """The sorted distinct labels, refused when there are more than a taught model may have."""
    labels = tuple(sorted(set(names)))
    if len(labels) > limits.max_classes:
        raise TeachLimitExceeded(
            f"Catalog {catalog!r} has {len(labels)} labels; a taught model has at most "
            f"{limits.max_classes} classes.",
            limit_classes=limits.max_classes,
        )
    return labels


def read_examples(
    service: CatalogService, catalog: str, limits: Limits, should_stop: ShouldStop = _never
) -> tuple[CatalogRecord, Examples]:
    """Every labelled item's stored vector; unlabelled items are counted and ignored."""
    record = _sized_record(service, catalog, limits)
    store = service.store
    vectors: list[np.ndarray] = []
    names: list[str] = []
    shas: list[str] = []
    group_keys: list[object] = []
    item_names: list[str] = []
    unlabelled = 0
    for batch in store.iter_items(catalog, batch=500):
        if should_stop():
            raise TeachCancelled()
        for item in batch:
            if item.label is None:
                unlabelled += 1
                continue
            try:
                vector = store.get_vector(catalog, item.id)
            except ItemNotFound:  # deleted since its page was listed: as if a moment earlier
                continue
            names.append(item.label)
            shas.append(item.image.sha256)
            vectors.append(vector)
            group_keys.append(group_key(item.metadata))
            item_names.append(item_name(item.id, item.metadata))
    labels = _checked_labels(set(names), catalog, limits)
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.asarray([index[n] for n in names], dtype=np.int64)
    x = unit(np.stack(vectors)) if vectors else np.zeros((0, record.model.dim))
    # Copies by either notion: the same stored file, or the same embedding (what validate
    # keeps on one side of a split); each class counts the fewer.
    same_file = np.unique(shas, return_inverse=True)[1] if shas else y
    distinct = np.minimum(_distinct(y, same_file, labels), _distinct(y, copy_groups(x), labels))
    check_examples(y, labels, catalog, distinct)
    groups = _group_ids(group_keys)
    return record, Examples(
        x,
        y,
        labels,
        skipped_unlabelled=unlabelled,
        groups=groups,
        names=tuple(item_names),
        backbone=record.model.name,
    )


def item_name(item_id: str, metadata: object) -> str:
    """What a person knows an item by: the file it came from (`metadata.file`, set for the
    pictures of a zip or folder), else its id."""
    file = metadata.get("file") if isinstance(metadata, dict) else None
    return file if isinstance(file, str) and file else item_id


def group_key(metadata: object) -> object:
    """An item's `metadata.group` (a non-empty string or an integer), or None."""
    value = metadata.get("group") if isinstance(metadata, dict) else None
    if isinstance(value, str) and value.strip():
        return ("s", value)
    if isinstance(value, int) and not isinstance(value, bool):
        return ("i", value)
    return None


def _group_ids(keys: Sequence[object]) -> I64 | None:
    """A group id per item: one per distinct key, and its own for an item without one."""
    if all(k is None for k in keys):
        return None
    ids: dict[object, int] = {}
    return np.asarray(
        [ids.setdefault(k if k is not None else ("row", i), len(ids)) for i, k in enumerate(keys)],
        np.int64,
    )


def check_labels(service: CatalogService, catalog: str, limits: Limits) -> dict[str, int]:
    """Label counts of a catalog (no vectors read), checked against the teaching rules; a
    catalog built with another build of its model than the one served (stale, to be reindexed)
    is a 409 now, as the job would fail with."""
    service.bound_model(_sized_record(service, catalog, limits))
    counts: dict[str, int] = {}
    files: dict[str, set[str]] = {}  # distinct stored pictures per label
    for batch in service.store.iter_items(catalog, batch=1000):
        for item in batch:
            if item.label is not None:
                counts[item.label] = counts.get(item.label, 0) + 1
                files.setdefault(item.label, set()).add(item.image.sha256)
    labels = _checked_labels(counts, catalog, limits)
    y = np.asarray([i for i, lab in enumerate(labels) for _ in range(counts[lab])], np.int64)
    check_examples(y, labels, catalog, np.asarray([len(files[lab]) for lab in labels]))
    return counts


def _distinct(y: I64, groups: I64, labels: Sequence[str]) -> I64:
    """Distinct pictures per class: the number of copy groups among its items."""
    pairs = np.unique(np.stack([y, groups]), axis=1) if len(y) else np.zeros((2, 0), np.int64)
    return np.bincount(pairs[0], minlength=len(labels))


def check_examples(y: I64, labels: Sequence[str], source: str, distinct: I64 | None = None) -> None:
    """At least MIN_CLASSES classes with MIN_PER_CLASS items each that are distinct pictures
    (`distinct`, per class): a picture added twice is one example, and a class of copies of one
    picture leaves nothing to hold out but copies of what the head was fitted on."""
    counts = np.bincount(y, minlength=len(labels))
    distinct = counts if distinct is None else np.minimum(distinct, counts)
    if len(labels) < MIN_CLASSES:
        raise NotEnoughExamples(
            f"{source!r} has {len(labels)} labelled class(es); teaching needs at least "
            f"{MIN_CLASSES} classes with {MIN_PER_CLASS}+ labelled items each.",
            classes={lab: int(c) for lab, c in zip(labels, counts, strict=True)},
        )
    few = {
        lab: (int(c), int(d))
        for lab, c, d in zip(labels, counts, distinct, strict=True)
        if d < MIN_PER_CLASS
    }
    if few:
        copies = any(c != d for c, d in few.values())
        raise NotEnoughExamples(
            f"Every class needs at least {MIN_PER_CLASS} labelled items"
            + (" that are distinct pictures (copies of one picture count once)" if copies else "")
            + "; too few in "
            + ", ".join(
                f"{k!r} ({c})" if c == d else f"{k!r} ({c} items, {d} distinct picture(s))"
                for k, (c, d) in few.items()
            )
            + ".",
            classes={lab: int(c) for lab, c in zip(labels, counts, strict=True)},
            distinct_pictures={lab: int(d) for lab, d in zip(labels, distinct, strict=True)},
        )
