"""The labelled examples of a catalog: its stored unit embeddings and labels, checked against
the teaching rules (at least 2 classes with 2+ items each, class and item caps). No image is
decoded: the catalog already holds every item's vector."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from app.catalog.service import CatalogService
from app.catalog.types import CatalogRecord, ItemNotFound
from app.settings import Settings
from app.teach.errors import NotEnoughExamples, TeachCancelled, TeachLimitExceeded
from app.teach.head import F64, I64, unit

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
            vectors.append(vector)
    labels = _checked_labels(set(names), catalog, limits)
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.asarray([index[n] for n in names], dtype=np.int64)
    x = unit(np.stack(vectors)) if vectors else np.zeros((0, record.model.dim))
    check_examples(y, labels, catalog)
    return record, Examples(x=x, y=y, labels=labels, skipped_unlabelled=unlabelled)


def check_labels(service: CatalogService, catalog: str, limits: Limits) -> dict[str, int]:
    """Label counts of a catalog (no vectors read), checked against the teaching rules; a
    catalog built with another build of its model than the one served (stale, to be reindexed)
    is a 409 now, as the job would fail with."""
    service.bound_model(_sized_record(service, catalog, limits))
    counts: dict[str, int] = {}
    for batch in service.store.iter_items(catalog, batch=1000):
        for item in batch:
            if item.label is not None:
                counts[item.label] = counts.get(item.label, 0) + 1
    labels = _checked_labels(counts, catalog, limits)
    y = np.asarray([i for i, lab in enumerate(labels) for _ in range(counts[lab])], np.int64)
    check_examples(y, labels, catalog)
    return counts


def check_examples(y: I64, labels: Sequence[str], source: str) -> None:
    counts = np.bincount(y, minlength=len(labels))
    if len(labels) < MIN_CLASSES:
        raise NotEnoughExamples(
            f"{source!r} has {len(labels)} labelled class(es); teaching needs at least "
            f"{MIN_CLASSES} classes with {MIN_PER_CLASS}+ labelled items each.",
            classes={lab: int(c) for lab, c in zip(labels, counts, strict=True)},
        )
    few = {lab: int(c) for lab, c in zip(labels, counts, strict=True) if c < MIN_PER_CLASS}
    if few:
        raise NotEnoughExamples(
            f"Every class needs at least {MIN_PER_CLASS} labelled items; too few in "
            + ", ".join(f"{k!r} ({v})" for k, v in few.items())
            + ".",
            classes={lab: int(c) for lab, c in zip(labels, counts, strict=True)},
        )
