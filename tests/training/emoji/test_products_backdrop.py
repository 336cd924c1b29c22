"""training.emoji.products_backdrop: what it measures and how the card section reads."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.emoji.products_backdrop import SECTION, SHOWN, card_section
from training.emoji.products_views import EVAL_VIEWS, PRESENTATIONS


def _fold(style: str, k: int) -> dict[str, Any]:
    return {
        "held_out": style,
        **{kind: {"k": k, "n": 14} for kind in (*EVAL_VIEWS, *PRESENTATIONS)},
    }


def test_every_presentation_is_measured_both_ways_and_encoded_as_a_client_would() -> None:
    assert set(SHOWN) >= {*EVAL_VIEWS, *PRESENTATIONS}
    arr = np.full((32, 32, 3), 128, np.uint8)
    assert SHOWN["on_gray_jpeg"][1](arr).startswith(b"\xff\xd8\xff")  # a JPEG
    assert SHOWN["on_gray"][1](arr).startswith(b"\x89PNG")


def test_card_section_reports_each_presentation_and_the_held_out_folds() -> None:
    shown = {
        f"{name}/{policy}": {"pooled": 90 if policy == "on" else 70, "n": 98}
        for name in SHOWN
        for policy in ("off", "on")
    }
    fm = {
        "test": {"off": 0.9411, "on": 0.9411, "same_top1": 1.0, "n": 10_000},
        "inverted": {"off": 0.9411, "on": 0.9411, "same_top1": 1.0, "n": 10_000},
    }
    folds = [_fold("noto", 13), _fold("twemoji", 12)]
    pooled = {
        kind: {"k": 25, "n": 28, "low": 0.7, "high": 0.97}
        for kind in folds[0]
        if kind != "held_out"
    }
    text = card_section(shown, fm, {"folds": folds, "pooled": pooled})
    assert text.startswith(SECTION)
    for name in SHOWN:
        assert f"| {name} | 70/98 = 71.4% " in text and "| 90/98 = 91.8% " in text
    assert "| noto | 13/14 | 13/14 |" in text and "| twemoji | 12/14 |" in text
    assert "| pooled | 25/28 = 89.3% [" in text
    assert "94.11% with the policy, 94.11% without; top-1 the same on 100.00%" in text
    assert "The held-out figures under Metrics are v3's own run" in text
    # without a leave-one-style-out run there is no held-out table
    assert "| held-out style |" not in card_section(shown, fm, None)
