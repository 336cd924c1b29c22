"""The decision threshold of a taught yes/no model, chosen on its held-out scores."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from app.metrics import BinaryReport, binary_report, calibrate_threshold

MIN_TO_TUNE: Final = 10  # held-out pictures on each side before a yes/no threshold is tuned
TUNED_RANGE: Final = (0.05, 0.95)  # a tuned threshold stays within (never all yes, or all no)


def yes_no_threshold(
    scores: npt.NDArray[np.float64], is_pos: npt.NDArray[np.bool_], label: str
) -> tuple[float, str, str | None]:
    """(threshold on P(label), how it was chosen, a warning or None). Round 26: the best-F1 cut
    on the held-out scores of heads taught on fewer pictures fell to 0.0 at 2-3 positives
    (heads that saw one or two positives score them low), so the served model said yes to
    everything while the report, about the most probable label, looked fine. The threshold
    moves off the even odds (0.5: the most probable label, what the figures describe) only
    with MIN_TO_TUNE held-out pictures on each side, stays within TUNED_RANGE, and never where
    it would flag every held-out picture."""
    n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
    if min(n_pos, n_neg) < MIN_TO_TUNE:
        return (
            0.5,
            "threshold 0.5 (the most probable label)",
            f"the yes/no threshold stays at 0.5: {n_pos} held-out {label!r} and {n_neg} other "
            f"pictures are too few to tune it ({MIN_TO_TUNE}+ of each)",
        )
    cut = calibrate_threshold(scores, is_pos, rule="max_f1").threshold
    flagged = binary_report(scores, is_pos, cut)
    if flagged.tp + flagged.fp == len(scores):
        return 0.5, "threshold 0.5 (the best-F1 cut flagged every held-out picture)", None
    lo, hi = TUNED_RANGE
    cut = min(max(cut, lo), hi)
    return cut, f"threshold = best F1 on the held-out scores (in-sample), within {lo}-{hi}", None


def decision_sentence(label: str, d: BinaryReport) -> str:
    """What the served yes/no decision did on the held-out pictures, in words: its precision
    and recall at its threshold (`extra.decision_*`), which `metrics.precision`/`recall` (the
    average over both classes, of the most probable label) were misread for (round 42)."""
    line = (
        f"At its threshold ({d.threshold:.3g}) the served decision found {d.tp} of "
        f"{d.n_positive} held-out {label} pictures (recall {d.recall:.0%})"
    )
    flags = d.tp + d.fp
    if flags == 0:
        return line + " and flagged no picture"
    return line + (
        f" and was right in {d.tp} of the {flags} it flagged (precision {d.precision:.0%})"
    )
