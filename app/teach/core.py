"""Teach one model from a catalog: read stored embeddings + labels, validate, fit, write a bundle.

The same path serves the HTTP jobs, the CLI (`python -m training teach`) and bench/teach.py.
No image is decoded: the catalog already holds each item's unit embedding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from app.bundle import Bundle, Metrics
from app.catalog.service import CatalogService
from app.catalog.types import CatalogRecord
from app.metrics import EvalReport, calibrate_threshold, evaluate_probs, wilson_interval
from app.registry import ModelRegistry
from app.settings import Settings
from app.teach.compose import TaughtSpec, check_model_name, write_taught
from app.teach.errors import ModelNameTaken, NotEnoughExamples, TeachCancelled, TeachLimitExceeded
from app.teach.head import F64, I64, Head, fit_head, unit
from app.teach.validate import Validation, validate

logger = logging.getLogger(__name__)

MIN_CLASSES = 2
MIN_PER_CLASS = 2
WARN_PER_CLASS = 10

Progress = Callable[[str, float], None]  # phase, 0..1
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class Limits:
    max_classes: int = 100
    max_items: int = 20_000


def limits_from(settings: Settings) -> Limits:
    return Limits(max_classes=settings.teach_max_classes, max_items=settings.teach_max_items)


def taught_root(settings: Settings) -> Path:
    """Taught bundles live in the service's data folder (the shipped models/ may be read-only)."""
    return settings.data_dir / "models"


@dataclass(frozen=True)
class Examples:
    x: F64  # n x d unit rows
    y: I64
    labels: tuple[str, ...]
    skipped_unlabelled: int


@dataclass(frozen=True)
class Trained:
    head: Head
    validation: Validation
    report: EvalReport
    metrics: Metrics
    summary: list[str]
    warnings: list[str]
    seconds: float


@dataclass(frozen=True)
class TeachResult:
    model: str
    version: str
    path: Path
    catalog: str
    backbone: str
    n_items: int
    labels: list[str]
    metrics: dict[str, Any]
    summary: list[str]
    warnings: list[str] = field(default_factory=list)


def _noop_progress(_phase: str, _fraction: float) -> None:
    return None


def _never() -> bool:
    return False


def read_examples(
    service: CatalogService, catalog: str, limits: Limits, should_stop: ShouldStop = _never
) -> tuple[CatalogRecord, Examples]:
    """Every labelled item's stored vector; unlabelled items are counted and ignored."""
    record = service.get(catalog)
    if record.item_count > limits.max_items:
        raise TeachLimitExceeded(
            f"Catalog {catalog!r} has {record.item_count:,} items; one teach job takes at most "
            f"{limits.max_items:,}.",
            limit_items=limits.max_items,
        )
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
            names.append(item.label)
            vectors.append(store.get_vector(catalog, item.id))
    labels = tuple(sorted(set(names)))
    if len(labels) > limits.max_classes:
        raise TeachLimitExceeded(
            f"Catalog {catalog!r} has {len(labels)} labels; a taught model has at most "
            f"{limits.max_classes} classes.",
            limit_classes=limits.max_classes,
        )
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.asarray([index[n] for n in names], dtype=np.int64)
    x = unit(np.stack(vectors)) if vectors else np.zeros((0, record.model.dim))
    check_examples(y, labels, catalog)
    return record, Examples(x=x, y=y, labels=labels, skipped_unlabelled=unlabelled)


def check_labels(service: CatalogService, catalog: str, limits: Limits) -> dict[str, int]:
    """Label counts of a catalog (no vectors read), checked against the teaching rules."""
    record = service.get(catalog)
    if record.item_count > limits.max_items:
        raise TeachLimitExceeded(
            f"Catalog {catalog!r} has {record.item_count:,} items; one teach job takes at most "
            f"{limits.max_items:,}.",
            limit_items=limits.max_items,
        )
    counts: dict[str, int] = {}
    for batch in service.store.iter_items(catalog, batch=1000):
        for item in batch:
            if item.label is not None:
                counts[item.label] = counts.get(item.label, 0) + 1
    labels = tuple(sorted(counts))
    if len(labels) > limits.max_classes:
        raise TeachLimitExceeded(
            f"Catalog {catalog!r} has {len(labels)} labels; a taught model has at most "
            f"{limits.max_classes} classes.",
            limit_classes=limits.max_classes,
        )
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


def positive_index(labels: Sequence[str], requested: str | None) -> int:
    """For two classes: the requested label, else the one not named like "not X" / "other"."""
    if requested is not None:
        if requested not in labels:
            raise NotEnoughExamples(f"positive_label {requested!r} is not one of {list(labels)}.")
        return labels.index(requested)
    negative = ("not", "no", "non", "other", "others", "background", "negative")
    for i, lab in enumerate(labels):
        first = lab.lower().replace("-", " ").replace("_", " ").split()
        if first and first[0] in negative:
            return 1 - i
    return 0


def plain_summary(report: EvalReport) -> list[str]:
    """'Santa recognised in 18 of 20 held-out pictures' per class, from the confusion matrix."""
    out = []
    for i, c in enumerate(report.per_class):
        if c.support == 0:
            continue
        hit = report.confusion[i][i]
        row = report.confusion[i]
        worst = max((j for j in range(len(row)) if j != i), key=lambda j: row[j], default=None)
        line = f"{c.label} recognised in {hit} of {c.support} held-out pictures"
        if worst is not None and row[worst] > 0:
            line += f" (taken for {report.per_class[worst].label} {row[worst]}x)"
        out.append(line)
    return out


def train(
    ex: Examples,
    *,
    dataset: str,
    seed: int = 0,
    positive_label: str | None = None,
    progress: Progress = _noop_progress,
    should_stop: ShouldStop = _never,
) -> Trained:
    """Validate (L2 chosen without the reported items), then fit the served head on all items."""
    t0 = time.perf_counter()
    counts = np.bincount(ex.y, minlength=len(ex.labels))
    warnings = [
        f"class {lab!r} has only {int(n)} examples; {WARN_PER_CLASS}+ per class give steadier results"
        for lab, n in zip(ex.labels, counts, strict=True)
        if n < WARN_PER_CLASS
    ]

    def stop() -> bool:
        if should_stop():
            raise TeachCancelled()
        return False

    progress("validating", 0.0)
    # Many small matrix products: one BLAS thread is ~15x faster than OpenBLAS's default pool
    # when other work shares the cores (measured 0.9 vs 14 ms per step, 800 x 256, 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        val = validate(
            ex.x,
            ex.y,
            len(ex.labels),
            seed=seed,
            progress=lambda f: progress("validating", f),
            should_stop=stop,
        )
    y_val = ex.y[val.indices]
    report = evaluate_probs(y_val, val.probs, ex.labels)
    k = round(report.accuracy * report.n_samples)
    ci = wilson_interval(k, report.n_samples)
    notes = f"{val.describe()}; L2 chosen by inner cross-validation; seed {seed}"
    metrics = report.to_metrics(
        dataset=dataset,
        split=val.method,
        evaluated_with="onnxruntime",
        notes=notes,
        accuracy_ci95_low=round(ci.low, 4),
        accuracy_ci95_high=round(ci.high, 4),
    ).model_copy(update={"evaluated_with": "numpy"})  # same weights as the graph, scored in numpy
    if len(ex.labels) == 2:
        pos = positive_index(ex.labels, positive_label)
        cal = calibrate_threshold(val.probs[:, pos], y_val == pos, rule="max_f1")
        metrics = metrics.model_copy(
            update={
                "threshold": cal.threshold,
                "positive_label": ex.labels[pos],
                "notes": notes + "; threshold = best F1 on the held-out scores (in-sample)",
            }
        )
    progress("fitting", 0.0)
    with threadpool_limits(limits=1, user_api="blas"):
        head = fit_head(ex.x, ex.y, len(ex.labels), l2=val.l2, should_stop=stop)
    progress("fitting", 1.0)
    return Trained(
        head=head,
        validation=val,
        report=report,
        metrics=metrics,
        summary=plain_summary(report),
        warnings=warnings,
        seconds=time.perf_counter() - t0,
    )


def teach_catalog(
    service: CatalogService,
    registry: ModelRegistry,
    taught_root: Path,
    catalog: str,
    model: str,
    *,
    seed: int = 0,
    positive_label: str | None = None,
    description: str = "",
    limits: Limits | None = None,
    progress: Progress = _noop_progress,
    should_stop: ShouldStop = _never,
) -> TeachResult:
    """The whole job: examples -> validated head -> bundle on disk -> served by `registry`."""
    check_model_name(model)
    if registry.is_shipped(model) or model in registry.discover_names():
        raise ModelNameTaken(f"{model!r} is a shipped model; choose another name.")
    progress("reading embeddings", 0.0)
    record, ex = read_examples(service, catalog, limits or Limits(), should_stop)
    backbone = service.bound_model(record)  # 409 if the served backbone changed since
    if backbone.taught:
        raise NotEnoughExamples(
            f"Catalog {catalog!r} is bound to taught model {record.model.name!r}; "
            "teach from a catalog bound to a shipped backbone."
        )
    trained = train(
        ex,
        dataset=f"catalog {catalog!r} ({len(ex.y)} labelled items)",
        seed=seed,
        positive_label=positive_label,
        progress=progress,
        should_stop=should_stop,
    )
    if should_stop():
        raise TeachCancelled()
    progress("writing bundle", 0.0)
    bb: Bundle = backbone.model.bundle
    spec = TaughtSpec(
        name=model,
        labels=ex.labels,
        backbone=bb,
        catalog=catalog,
        n_items=len(ex.y),
        metrics=trained.metrics,
        description=description,
        seed=seed,
        training_time_s=trained.seconds,
        notes=f"{ex.skipped_unlabelled} unlabelled items ignored",
    )
    path, version = write_taught(taught_root, spec, trained.head, trained.summary)
    progress("loading", 0.0)
    registry.refresh()
    registry.get(f"{model}@{version}")  # raises if it was refused
    logger.info(
        "taught %s v%s from catalog %s: %d items, %d classes, held-out accuracy %.3f (n=%d)",
        model,
        version,
        catalog,
        len(ex.y),
        len(ex.labels),
        trained.report.accuracy,
        trained.report.n_samples,
    )
    return TeachResult(
        model=model,
        version=version,
        path=path,
        catalog=catalog,
        backbone=bb.name,
        n_items=len(ex.y),
        labels=list(ex.labels),
        metrics={
            **trained.metrics.model_dump(mode="json"),
            "per_class": [c.__dict__ for c in trained.report.per_class],
            "confusion": trained.report.confusion,
            "labels": list(ex.labels),
        },
        summary=trained.summary,
        warnings=trained.warnings,
    )


def job_work(
    service: CatalogService, registry: ModelRegistry, settings: Settings
) -> Callable[[Any, Progress, ShouldStop], dict[str, Any]]:
    """What a teach job runs (see app.teach.jobs): the job names catalog, model and options."""
    root = taught_root(settings)
    limits = limits_from(settings)

    def work(job: Any, progress: Progress, should_stop: ShouldStop) -> dict[str, Any]:
        opts = job.options
        result = teach_catalog(
            service,
            registry,
            root,
            job.catalog,
            job.model,
            seed=int(opts.get("seed", 0)),
            positive_label=opts.get("positive_label"),
            description=str(opts.get("description", "")),
            limits=limits,
            progress=progress,
            should_stop=should_stop,
        )
        out = asdict(result)
        out["path"] = None  # a server path is nobody's business over HTTP
        return out

    return work
