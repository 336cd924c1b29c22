"""training.emoji.top_bundle's figures and ship rule on fold files written like top_ship's, and
the CI check (training.emoji.check) of the shipped fine-tuned-top bundle through its served
graph: passes on the recorded counts, fails on a record that is off by two pictures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, ROOT
from training.emoji import top_bundle as tb
from training.emoji.catalog import STYLES, load_catalog
from training.emoji.top_graph import TOP_FOLDS
from training.emoji.top_ship import _save, fold_path


def _fold_files(run_dir: Path, shift: dict[str, float]) -> None:
    """Per style 100 negatives scored U(0, 0.45) and 10 positives at 0.475, the whole style's
    scores shifted by `shift[style]`: each style ranks perfectly, pooled styles do not."""
    rng = np.random.default_rng(0)
    for style in STYLES:
        y = np.r_[np.zeros(100, np.int64), np.ones(10, np.int64)]
        s = np.r_[rng.uniform(0, 0.45, 100), np.full(10, 0.475)] + shift.get(style, 0.0)
        info = {"validation_style": "noto", "santa": {"epoch": 0, "threshold0": 0.5}}
        _save(fold_path(run_dir, style), {"santa_scores0": s, "santa_y": y}, info)


def test_per_style_cuts_and_the_pooled_cut_differ_and_decide(tmp_path: Path) -> None:
    _fold_files(tmp_path, {"noto": 0.45, "twemoji": 0.45})
    summary = tb.summarise_folds(tmp_path)
    p = summary["pooled"]["finetuned"]
    assert p["n"] == 770 and p["n_positive"] == 70
    for style in STYLES:  # each style alone: every positive above its 1% FPR cut
        assert summary["folds"][style]["finetuned"]["recall_at_1pct_fpr"]["k"] == 10
    assert p["per_style_cuts"]["k"] == 70
    # pooled: the shifted styles' negatives sit above the others' positives
    assert p["recall_at_1pct_fpr"]["k"] == 20
    ok, why = tb.decide(summary)
    assert not ok and "do not ship" in why  # 20 < v1's 89 on the pooled cut
    _fold_files(tmp_path, {})
    assert tb.decide(tb.summarise_folds(tmp_path))[1].startswith("per-style cuts summed 70/70")


@pytest.mark.slow  # renders pictures and runs the served graph twice (~10 s)
def test_check_rescores_a_fold_through_the_served_graph(tmp_path: Path) -> None:
    from training.emoji.check import _Features, check_bundle
    from training.emoji.embed import BACKBONE, Backbone

    bundle = ROOT / "models" / "santa"
    assert (bundle / TOP_FOLDS).is_file()
    feats = _Features(Backbone(BACKBONE, threads=1))
    style = "fluent-high-contrast"  # 3 Santas: the smallest style
    catalog = load_catalog(DATA, styles=[style])
    rows, problems = check_bundle(bundle, catalog, feats, 10, [style])
    assert not problems, problems
    assert rows[0]["recall"].endswith("/3") and rows[0]["FP (sample)"].endswith("/10")
    tp = int(rows[0]["recall"].split("/")[0])
    # a copy whose record is two pictures off must fail
    copy = tmp_path / "santa"
    shutil.copytree(bundle, copy)
    z = dict(np.load(copy / TOP_FOLDS))
    i = list(STYLES).index(style)
    wrong = tp - 2 if tp >= 2 else tp + 2
    z["tp"][i], z["fn"][i] = wrong, 3 - wrong
    np.savez_compressed(copy / TOP_FOLDS, **z)
    _, problems = check_bundle(copy, catalog, feats, 10, [style])
    assert any(f"recall {tp}/3 vs recorded {wrong}/3" in p for p in problems), problems
