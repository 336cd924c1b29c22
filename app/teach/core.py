"""Teach one model from a catalog: read stored embeddings + labels, validate, fit, write a bundle.

The same path serves the HTTP jobs, the CLI (`python -m training teach`) and bench/teach.py.
No image is decoded: the catalog already holds each item's unit embedding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from app.bundle import Bundle, Metrics
from app.catalog.service import CatalogService
from app.errors import InvalidRequest, ServiceError
from app.metrics import (
    EvalReport,
    binary_report,
    evaluate_probs,
    wilson_interval,
)
from app.registry import ModelRegistry
from app.settings import Settings
from app.teach.caveats import caveats, majority_extra, without_trivial_top_k
from app.teach.compose import (
    Room,
    TaughtSpec,
    check_model_name,
    delete_version,
    withdraw_published,
    write_taught,
)
from app.teach.errors import ModelNameTaken, NotEnoughExamples, TeachCancelled
from app.teach.examples import Examples, Limits, limits_from, read_examples
from app.teach.familiar import FLOOR_KEY, familiar_floor
from app.teach.head import Head, fit_head
from app.teach.validate import Validation, validate
from app.teach.yes_no import decision_sentence, yes_no_threshold

logger = logging.getLogger(__name__)

WARN_PER_CLASS = 10

Progress = Callable[[str, float], None]  # phase, 0..1
ShouldStop = Callable[[], bool]


def taught_root(settings: Settings) -> Path:
    """Taught bundles live in the service's data folder (the shipped models/ may be read-only)."""
    return settings.data_dir / "models"


def withdraw_orphan(settings: Settings) -> Callable[[Any], list[str]]:
    """JobStore's hook for a job that died while publishing: the versions it put in place."""
    root = taught_root(settings)

    def withdraw(job: Any) -> list[str]:
        if job.started_at is None:
            return []
        since = datetime.fromisoformat(job.started_at)
        return withdraw_published(root, job.model, job.catalog, since)

    return withdraw


def room_from(settings: Settings) -> Room:
    return Room(max_models=settings.teach_max_models, max_versions=settings.teach_max_versions)


def check_free_name(registry: ModelRegistry, model: str) -> None:
    """A valid name that no shipped bundle has, served or not: a registry limited to some
    models (the CLI serves only its backbone) must still refuse the others' names, which any
    full server would refuse to serve as taught models."""
    check_model_name(model)
    if registry.is_shipped(model) or (registry.models_dir / model).exists():
        raise ModelNameTaken(f"{model!r} is a shipped model; choose another name.")


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


def check_positive_label(requested: str | None, labels: Sequence[str]) -> None:
    """positive_label names one of exactly two classes (it was ignored in silence with more)."""
    if requested is None:
        return
    if requested not in labels:
        raise NotEnoughExamples(f"positive_label {requested!r} is not one of {list(labels)}.")
    if len(labels) != 2:
        raise InvalidRequest(
            f"positive_label is for two-class models (a yes/no decision with a threshold); "
            f"these examples have {len(labels)} labels: {', '.join(labels)}. Leave it out, or "
            "teach from a catalog with two labels."
        )


NEGATIVE_WORDS = ("not", "no", "non", "other", "others", "background", "negative")


def looks_negative(label: str) -> bool:
    """A label named like "not X", "no_x", "other", "background": the "no" side of a yes/no
    question (first word, case-insensitive; "-" and "_" separate words)."""
    first = label.lower().replace("-", " ").replace("_", " ").split()
    return bool(first) and first[0] in NEGATIVE_WORDS


def positive_index(labels: Sequence[str], requested: str | None) -> int | None:
    """For two classes: which label a yes/no decision is for, or None when it is not a yes/no
    question. The requested label, else the one beside a label named like "not X" / "other";
    two ordinary categories ("Sneaker", "Sandal") have none: they are ranked like any classes,
    without a threshold that would turn one of them into "not the other"."""
    if requested is not None:
        if requested not in labels:
            raise NotEnoughExamples(f"positive_label {requested!r} is not one of {list(labels)}.")
        return labels.index(requested)
    for i, lab in enumerate(labels):
        if looks_negative(lab):
            return 1 - i
    return None


def plain_summary(report: EvalReport) -> list[str]:
    """'santa recognised in 18 of 20 held-out pictures (95% interval 70-97%; taken for not_santa
    2x)' per class, from the confusion matrix. The interval (Wilson) says how little a handful
    of pictures shows (round 26 audit: "6 of 6" read as certain where no class reached 99% on
    new pictures)."""
    out = []
    for i, c in enumerate(report.per_class):
        if c.support == 0:
            continue
        hit = report.confusion[i][i]
        row = report.confusion[i]
        worst = max((j for j in range(len(row)) if j != i), key=lambda j: row[j], default=None)
        ci = wilson_interval(hit, c.support)
        line = f"{c.label} recognised in {hit} of {c.support} held-out pictures"
        line += f" (95% interval {ci.low * 100:.0f}-{ci.high:.0%}"
        if worst is not None and row[worst] > 0:
            line += f"; taken for {report.per_class[worst].label} {row[worst]}x"
        out.append(line + ")")
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
    check_positive_label(positive_label, ex.labels)
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
            groups=ex.groups,
        )
    y_val = ex.y[val.indices]
    report = evaluate_probs(y_val, val.probs, ex.labels)
    k = round(report.accuracy * report.n_samples)
    ci = wilson_interval(k, report.n_samples)
    notes = f"{val.describe()}; L2 chosen by inner cross-validation; seed {seed}"
    if val.grouped:
        notes += "; items sharing a metadata.group kept on one side"
    elif ex.groups is not None:
        warnings.append(
            "metadata.group could not be kept: with the groups, a class has fewer than 2 groups "
            "of its own, so items of one group were split and the figures may be optimistic"
        )
    metrics = report.to_metrics(
        dataset=dataset,
        split=val.method,
        evaluated_with="onnxruntime",
        notes=notes,
        accuracy_ci95_low=round(ci.low, 4),
        accuracy_ci95_high=round(ci.high, 4),
    ).model_copy(update={"evaluated_with": "numpy"})  # same weights as the graph, scored in numpy
    extra = {**without_trivial_top_k(metrics.extra, len(ex.labels)), **majority_extra(report)}
    floor = familiar_floor(ex.x, seed=seed, groups=ex.groups)  # predict's `familiar` uses it
    if floor is not None:
        extra[FLOOR_KEY] = round(floor, 4)
    metrics = metrics.model_copy(update={"extra": extra})
    warnings += caveats(ex, report)
    summary = plain_summary(report)
    pos = positive_index(ex.labels, positive_label) if len(ex.labels) == 2 else None
    if pos is not None:  # a yes/no question: asked for, or one label is the "no" side
        scores, is_pos = val.probs[:, pos], y_val == pos
        threshold, how, warning = yes_no_threshold(scores, is_pos, ex.labels[pos])
        decision = binary_report(scores, is_pos, threshold)
        metrics = metrics.model_copy(
            update={
                "threshold": threshold,
                "positive_label": ex.labels[pos],
                "notes": f"{notes}; {how}",
                # what the served `decision` did on the held-out items (the figures above are
                # the most probable label's, which is the decision only at 0.5)
                "extra": {
                    **metrics.extra,
                    "decision_precision": round(decision.precision, 4),
                    "decision_recall": round(decision.recall, 4),
                    "decision_accuracy": round(decision.accuracy, 4),
                },
            }
        )
        warnings += [warning] if warning else []
        summary.append(decision_sentence(ex.labels[pos], decision))
    progress("fitting", 0.0)
    with threadpool_limits(limits=1, user_api="blas"):
        head = fit_head(ex.x, ex.y, len(ex.labels), l2=val.l2, should_stop=stop)
    progress("fitting", 1.0)
    return Trained(
        head=head,
        validation=val,
        report=report,
        metrics=metrics,
        summary=summary,
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
    room: Room | None = None,
    progress: Progress = _noop_progress,
    should_stop: ShouldStop = _never,
) -> TeachResult:
    """The whole job: examples -> validated head -> bundle on disk -> served by `registry`."""
    check_free_name(registry, model)
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
    service.bound_model(record)  # 409 if the backbone was replaced while this job taught
    path, version = write_taught(taught_root, spec, trained.head, trained.summary, room)
    progress("loading", 0.0)
    registry.refresh()
    try:
        registry.get(f"{model}@{version}")  # raises if it was refused
    except ServiceError:
        # A failed job publishes nothing (round 26: it ended failed, and its version was
        # served once its backbone came back); a backbone replaced meanwhile is the 409.
        delete_version(taught_root, model, version)
        registry.refresh()
        service.bound_model(record)
        raise
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
    room = room_from(settings)

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
            room=room,
            progress=progress,
            should_stop=should_stop,
        )
        out = asdict(result)
        out["path"] = None  # a server path is nobody's business over HTTP
        return out

    return work
