"""Card sections for the emoji-head bundles, built from the LOSO report (no typed-in figures)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.bundle import Bundle, BundleMetadata
from app.bundle_write import write_bundle
from app.card import Section, Table
from app.metrics import Calibration
from training.emoji.catalog import (
    BIRD_AMBIGUOUS,
    BIRD_SUBCATEGORY,
    SANTA,
    SANTA_HARD_NAMES,
    STYLES,
)
from training.emoji.config import CardNote
from training.emoji.tasks import Task
from training.runs import reproduce_command


def _frac(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "n/a"
    return f"{d['k']}/{d['n']} = {100 * d['estimate']:.1f}% [{100 * d['low']:.1f}, {100 * d['high']:.1f}]"


def _row(what: str, f: dict[str, Any], threshold: float | None) -> tuple[str, ...]:
    return (
        what,
        str(f["n"]),
        str(f["n_positive"]),
        _frac(f["precision"]),
        _frac(f["recall"]),
        _frac(f.get("recall_at_1pct_fpr", {})),
        f"{f['roc_auc']:.3f}" if "roc_auc" in f else "n/a",
        "per fold" if threshold is None else f"{threshold:.4f}",
    )


HEADER = (
    "held-out style",
    "n",
    "positives",
    "precision [Wilson 95%]",
    "recall [Wilson 95%]",
    "recall at 1% FPR",
    "ROC AUC",
    "threshold",
)


def trained_on(task: Task) -> str:
    if task.name == "santa":
        return (
            "Trained on emoji drawings only: "
            f"{', '.join(sorted(SANTA))} in every skin tone are 'santa'; every other emoji is "
            "'not_santa', including the hard ones (other people and fantasy figures in every "
            f"skin tone, {', '.join(sorted(SANTA_HARD_NAMES))}). It has never seen a photograph "
            "of Santa (none is openly licensed and reachable here). For photos, teach your own "
            "model from a folder of your pictures: the server's teach feature, or "
            "`python -m training train --config training/configs/santa.yaml --data-dir <folder>`."
        )
    return (
        f"Trained on emoji drawings only (positives: emoji.json subcategory `{BIRD_SUBCATEGORY}`; "
        f"{' and '.join(sorted(BIRD_AMBIGUOUS))} are parts of a bird, not birds, and are left "
        "out of training and of every figure)"
        + (
            "; the head learns every emoji apart (a whale, a rabbit and a dove are three classes)"
            " and scores the birds' summed probability"
            if task.identity
            else ""
        )
        + ". The decision is 'ImageNet bird mass >= 0.5 "
        "(the photo-only rule) or the drawing head fires': photographed birds keep what the "
        "photo-only bundle had, and the labelled real photos are a test set the head never saw."
    )


NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}
AUGMENTS = "colour, line weight, scale/position, background, resolution"
LOGISTIC_PROTOCOL = (
    "Each style is scored by a head trained on the other six: the pictures as drawn, plus one "
    f"augmented view ({AUGMENTS}) of the positives and 35% of the rest when the inner "
    "validation preferred it. That choice, the regularisation and the threshold were made on "
    "validation scores from an inner leave-one-style-out over those six; the held-out style "
    "was scored once."
)


def identity_protocol(views: Sequence[str], wccn: Sequence[float] = ()) -> str:
    """How an identity head's folds were trained and thresholded, naming its views."""
    kinds: list[str] = []
    for v in views:
        if v.startswith("sty"):
            kinds.append(
                "one of every picture redrawn in another technique, as line art (its outline "
                "and colour boundaries in black on white) or as a black silhouette with its "
                "colour boundaries left white (render.style_view)"
            )
        elif v.startswith("all"):
            kinds.append("one of every picture")
        elif v == "aug0":
            kinds.append("one of the positives and 35% of the rest")
        else:
            kinds.append("one more of the positives")
    counts = dict(Counter(kinds))  # two style views are one kind of view, said once
    said = [
        k if n == 1 else k.replace("one ", f"{NUMBERS.get(n, str(n))} ", 1)
        for k, n in counts.items()
    ]
    return (
        "Each style is scored by a head trained on the other six: a softmax over every emoji "
        "(skin tones merged; one class per emoji, each drawn in up to six styles), on the "
        f"pictures as drawn plus augmented views ({AUGMENTS}): {'; '.join(said)}; one fixed "
        "setting. "
        + (
            "Its input is first whitened against the within-emoji covariance of the training "
            "rows (WCCN: directions in which one emoji varies across styles are scaled down), "
            f"the shrinkage chosen from {', '.join(f'{a:g}' for a in wccn)} by inner "
            "leave-one-style-out emoji identity (no task label, no held-out picture). "
            if wccn
            else ""
        )
        + "The score is the positive emoji's summed probability. Each style's threshold "
        "is the rule below applied to the other six styles' held-out scores, so nothing about a "
        "style's figures was chosen on that style; it was scored once."
    )


def card_sections(
    task: Task,
    loso: dict[str, Any],
    photos: dict[str, Any] | None,
    cal: Calibration,
    views: Sequence[str] = ("aug0",),
) -> tuple[Section, ...]:
    rows = [
        _row(s, loso["folds"][s], loso["folds"][s]["threshold"])
        for s in STYLES
        if s in loso["folds"]
    ]
    rows.append(_row("pooled (7 folds)", loso["pooled"], None))
    out = [
        Section("What it was trained on", paragraphs=(trained_on(task),)),
        Section(
            "Leave-one-style-out evaluation (drawings)",
            paragraphs=(
                (
                    identity_protocol(views, task.identity_wccn)
                    if task.identity
                    else LOGISTIC_PROTOCOL
                )
                + " Recall at 1% FPR is threshold-free (the best recall on that style at <= 1% "
                "false positives).",
                f"The shipped head is trained on all seven styles; its threshold "
                f"{cal.threshold:.4f} was chosen by the rule {cal.rule} on the pooled held-out "
                "scores above (validation for the shipped head, which was not fitted on them).",
            ),
            tables=(Table(HEADER, tuple(rows)),),
        ),
    ]
    if photos is not None:
        out.append(
            Section(
                "Real photos (test)",
                paragraphs=(
                    f"{photos['n']} photos, {photos['n_positive']} with a bird, never trained on; "
                    "decision scores (1 where the ImageNet bird mass reaches 0.5, else the head's). "
                    f"Lowest bird score {photos['lowest_bird']:.3f}, highest non-bird score "
                    f"{photos['highest_non_bird']:.3f}, threshold {cal.threshold:.4f}.",
                ),
                tables=(Table(HEADER, (_row("photos", photos, cal.threshold),)),),
            )
        )
    return tuple(out)


def note_sections(notes: Sequence[CardNote]) -> tuple[Section, ...]:
    """The config's `card_notes` as card sections (kept in the YAML, so a rebuild keeps them)."""
    return tuple(Section(n.title, paragraphs=tuple(n.paragraphs)) for n in notes)


def limitations(task: Task) -> tuple[str, ...]:
    common = (
        "Drawings here are emoji: one object, centred, on a plain background. Scenes, sketches, "
        "cartoons with many objects and photos of a kind the training data lacks are not measured.",
        "Per-style figures rest on few positives (see n and the intervals); a style's interval is wide.",
    )
    if task.name == "santa":
        return (
            "Not measured on photographs at all: teach your own model for photos.",
            *common,
        )
    return (
        "Only 3 bird photos among the labelled photos: the photo figures are a smoke test.",
        *common,
    )


def reproduce(config_path: Path | None) -> str:
    """The card's Reproduce line: fetch the data, then train the config file that was run
    (training.recipes.RunOptions.config_path; a config's `name` need not be its file name)."""
    return "scripts/fetch-data && " + reproduce_command(config_path)


def replace_section(card: str, title: str, section: str) -> str:
    """`card` with its section headed `title` (up to the next '## ' heading) replaced by
    `section`, or `section` appended when the card has none; the sections after it stay."""
    if title not in card:
        return card.rstrip() + "\n\n" + section
    start = card.index(title)
    end = card.find("\n## ", start + len(title))
    head = card[:start].rstrip() + "\n\n"
    return head + section if end < 0 else head + section.rstrip() + "\n" + card[end:]


def rewrite_bundle(bundle: Bundle, metadata: BundleMetadata, title: str, section: str) -> None:
    """Rewrite `bundle` in place with `metadata` and its card's section `title` replaced by
    `section`. The model file and labels stay, and so do the files beside them (fold models):
    write_bundle replaces the whole folder."""
    path = bundle.path
    card_path = path / "README.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    kept = ("model.onnx", "metadata.json", "labels.txt", "README.md")
    extra = {f.name: f.read_bytes() for f in path.iterdir() if f.is_file() and f.name not in kept}
    write_bundle(
        path,
        model_bytes=bundle.model_path.read_bytes(),
        metadata=metadata,
        labels=bundle.labels,
        model_card=replace_section(card, title, section),
        files=extra,
    )
