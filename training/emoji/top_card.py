"""santa's model card text from the fold summary (training.emoji.top_summary): how the fold
epochs were set, how members make a model, the first estimate beside this one, and the
leave-one-style-out table (shared with bird's card: training.emoji.top_bird).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.card import Section, Table
from training.emoji.card import HEADER, _frac, _row, trained_on
from training.emoji.catalog import PROJECT_ROOT, STYLES
from training.emoji.tasks import TASKS
from training.emoji.top_summary import (
    RULE,
    SERVED_RULE_SPLIT,
    V1_PER_STYLE_AT_1PCT,
    V1_POOLED_AT_1PCT,
    V1_SANTAS,
    fixed_epoch,
)


def v1_config() -> Any:
    """santa-emoji.yaml (v1's recipe): its card notes (the lecture's route) stay on the card."""
    from training.emoji.config import EmojiHeadConfig
    from training.recipes import load_config

    return load_config(PROJECT_ROOT / "training" / "configs" / "santa-emoji.yaml", EmojiHeadConfig)


def epoch_text(summary: dict[str, Any], final_epochs: int) -> tuple[str, str]:
    """How the folds' epoch was set, and how the served model's epoch count was."""
    fixed = fixed_epoch(summary)
    if fixed is None:
        epochs = ", ".join(f"{s} {f['epoch']}" for s, f in summary["folds"].items())
        return (
            "the next style validates: it chooses the epoch (0 = the head on the frozen "
            f"backbone) and the threshold (max F1). Chosen epochs: {epochs}.",
            f"for {final_epochs} epochs (the median of the folds' chosen epochs, a rule fixed "
            "before they ran)",
        )
    return (
        f"every fold model is taken at epoch {fixed}, the served model's procedure; the next "
        "style validates: it chooses the threshold (max F1) at that epoch.",
        f"for {final_epochs} epochs, fixed",
    )


def previous_text(prev: dict[str, Any], now: dict[str, Any]) -> str:
    """The first estimate beside this one (a run whose folds chose their own epochs)."""
    a, b = prev["pooled"]["finetuned"], now["pooled"]["finetuned"]
    epochs = ", ".join(str(f["epoch"]) for f in prev["folds"].values())
    return (
        "This is the second estimate. The first took each fold model at the epoch its "
        f"validation style chose ({epochs}), a different procedure from the served model's "
        f"fixed epochs, and its fold models' score scales disagreed: per-style cuts "
        f"{_frac(a['per_style_cuts'])}, one pooled cut {_frac(a['recall_at_1pct_fpr'])}, "
        f"which failed the ship rule (pooled one cut >= v1's {V1_POOLED_AT_1PCT}). This one: "
        f"per-style cuts {_frac(b['per_style_cuts'])}, one pooled cut "
        f"{_frac(b['recall_at_1pct_fpr'])}. A second look after a failed rule is weaker "
        "evidence than a first; both are reported."
    )


def members_text(seeds: Sequence[int], task: str = "santa") -> tuple[str, str]:
    """How a fold model and the served model are made of members (one: v2's single model)."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}", ""
    listed = ", ".join(str(x) for x in seeds)
    return (
        f"seeds {listed}: {len(seeds)} members per fold, trained alike, their {task} logits "
        "averaged and their validation thresholds averaged in logit space, a rule fixed before "
        "any average was scored",
        f" It is {len(seeds)} such tops (seeds {listed}) on one shared trunk, their logits "
        "averaged; the served embedding is the mean of theirs.",
    )


def fold_table_rows(summary: dict[str, Any], threshold: float) -> list[tuple[str, ...]]:
    """The card's leave-one-style-out table: each held-out style at its fold threshold, pooled,
    pooled at the shipped threshold, and the shipped rule chosen without each style."""
    folds = summary["folds"]
    rows = [_row(s, folds[s]["finetuned"], folds[s]["finetuned"]["threshold"]) for s in STYLES]
    rows.append(_row("pooled (7 fold models)", summary["pooled"]["finetuned"], None))
    rows.append(_row("pooled, at the shipped threshold", summary["at_shipped"], threshold))
    rows.append(_row(f"pooled, {SERVED_RULE_SPLIT}", summary["served_rule_loso"], None))
    return rows


def santa_sections(
    summary: dict[str, Any],
    threshold: float,
    final_info: dict[str, Any],
    previous: dict[str, Any] | None = None,
    seeds: Sequence[int] = (0,),
) -> tuple[Section, ...]:
    """santa's own card sections: what it was trained on and the leave-one-style-out figures."""
    p = summary["pooled"]["finetuned"]
    rows = fold_table_rows(summary, threshold)
    fold_seeds, served_members = members_text(seeds)
    fold_epochs, final_epochs = epoch_text(summary, int(final_info["settings"]["epochs"]))
    v1 = V1_POOLED_AT_1PCT
    return (
        Section("What it was trained on", paragraphs=(trained_on(TASKS["santa"]),)),
        Section(
            "Leave-one-style-out evaluation (drawings)",
            paragraphs=(
                "Seven fold models, one per held-out style: the top of the backbone (block15 and "
                "the head conv) and a logistic head fine-tuned on five styles (Adam 2e-4, every "
                "Santa plus 3,000 freshly drawn negatives per epoch, pictures as drawn plus one "
                f"augmented view, {fold_seeds}); {fold_epochs} The held-out style "
                "is scored once. Scores are computed in Keras on "
                "float16 cut tensors; the CI check (`scripts/eval-bundles`) re-scores every "
                "fold model through the served graph with that fold's weights swapped in.",
                "Recall at 1% FPR, two ways: each held-out style with its own cut at 1% false "
                f"positives, summed over the styles: {_frac(p['per_style_cuts'])}; one cut over "
                f"the scores of all 7 fold models pooled: {_frac(p['recall_at_1pct_fpr'])} "
                f"(v1: {V1_PER_STYLE_AT_1PCT}/{V1_SANTAS} and {v1}/{V1_SANTAS}). The first is "
                "the headline and the ship rule: an independent check measures this one served "
                "model on one source of drawings it never saw, cutting on that source's "
                "negatives, i.e. one held-out style with its own cut. The second measures how "
                "well the fold models' score scales agree across styles, that is how well one "
                "threshold travels to a new style: where it is below v1's, the decision "
                "(`is_positive`) suits some styles better than others. On a new source of "
                "drawings, choose the threshold on a few labelled pictures of it (every response "
                "carries P(santa)), or teach your own model.",
                f"The served model is trained on all seven styles {final_epochs}.{served_members} "
                f"Its"
                f" threshold {threshold:.4f} was chosen by the rule {RULE} on the pooled "
                "held-out scores of the fold models (as v1), so the row at the shipped "
                "threshold is optimistic. The last row applies the same rule leave one style "
                "out (each style's threshold chosen on the other six styles' pooled fold "
                "scores): what the served threshold does on a new style. The served model "
                "itself was never scored on a style it did not train on: every figure here is "
                "from the fold models.",
                *((previous_text(previous, summary),) if previous else ()),
            ),
            tables=(Table(HEADER, tuple(rows)),),
        ),
    )
