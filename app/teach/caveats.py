"""What a teach job's figures do not say by themselves, as plain warnings next to them: labels
that look like one class typed two ways, one picture filed under two labels, and a held-out
accuracy that is no better than always answering the largest class, and a figure resting on
near-identical variants of one picture (app/teach/variants.py)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from app.metrics import EvalReport
from app.teach.examples import Examples
from app.teach.head import F64, I64
from app.teach.validate import copy_groups
from app.teach.variants import variants_caveat

SHOWN = 3  # examples named in one warning


def label_key(label: str) -> str:
    """How a person reads a label: any case, compatibility forms (full-width letters,
    ligatures) folded, runs of spaces as one."""
    folded = unicodedata.normalize("NFKC", label).casefold()
    return re.sub(r"\s+", " ", folded).strip()


def look_alike_labels(labels: Sequence[str]) -> list[str]:
    """Labels that differ only by case, spacing or Unicode form ('Dog' and 'dog'): the
    catalog stores them as given, so they are taught as separate classes."""
    groups: dict[str, list[str]] = {}
    for lab in labels:
        groups.setdefault(label_key(lab), []).append(lab)
    out = []
    for same in groups.values():
        if len(same) > 1:
            names = " and ".join(repr(s) for s in same)
            out.append(
                f"labels {names} differ only by case, spacing or Unicode form; they are taught "
                "as separate classes (relabel the items if they are one class)"
            )
    return out


def conflicting_copies(x: F64, y: I64, labels: Sequence[str]) -> list[str]:
    """Pictures stored more than once under different labels (identical embeddings): the head
    cannot tell them apart, so at most one of their labels can be right."""
    groups = copy_groups(x)
    seen: dict[int, set[int]] = {}
    for g, c in zip(groups.tolist(), y.tolist(), strict=True):
        seen.setdefault(g, set()).add(c)
    mixed = [sorted(cs) for cs in seen.values() if len(cs) > 1]
    if not mixed:
        return []
    pairs = sorted({" / ".join(repr(labels[c]) for c in cs) for cs in map(tuple, mixed)})
    shown = "; ".join(pairs[:SHOWN]) + (
        f"; and {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else ""
    )
    return [
        f"{len(mixed)} picture(s) are in the catalog under more than one label ({shown}); "
        "at most one of their labels can be predicted, so they count against the accuracy"
    ]


def majority_share(report: EvalReport) -> tuple[str, float]:
    """The largest class among the evaluated items and its share: what always answering that
    class would score."""
    best = max(report.per_class, key=lambda c: c.support)
    return best.label, best.support / report.n_samples


def below_baseline(report: EvalReport) -> list[str]:
    """A held-out accuracy no higher than always answering the largest class (a 1:100 catalog
    scores 99% that way) says nothing about the small classes: point at their recall."""
    label, share = majority_share(report)
    if len(report.per_class) < 2 or report.accuracy > share:
        return []
    return [
        f"held-out accuracy {report.accuracy:.3f} is no better than always answering "
        f"{label!r} ({share:.3f} of the {report.n_samples} held-out pictures are {label!r}); "
        f"read the per-class recall instead (macro recall {report.macro_recall:.3f})"
    ]


def caveats(ex: Examples, report: EvalReport) -> list[str]:
    return [
        *look_alike_labels(ex.labels),
        *conflicting_copies(ex.x, ex.y, ex.labels),
        *below_baseline(report),
        *variants_caveat(ex),
    ]


def without_trivial_top_k(extra: dict[str, float], num_classes: int) -> dict[str, float]:
    """The top-k figure is left out where k covers every class (top-2 of two classes is
    always 1.0, whatever the head does)."""
    return {
        key: v
        for key, v in extra.items()
        if not ((m := re.fullmatch(r"top(\d+)_accuracy", key)) and int(m.group(1)) >= num_classes)
    }


def majority_extra(report: EvalReport) -> dict[str, float]:
    return {"majority_class_accuracy": round(majority_share(report)[1], 4)}
