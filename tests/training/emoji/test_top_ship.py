"""top_ship's --fixed-epoch option: every fold model taken at the final model's epoch (the
procedure that produced the served model), and fold files reused only if they are that epoch's.
Fast: no training, no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.emoji import top_summary as ts
from training.emoji.catalog import STYLES
from training.emoji.top_card import epoch_text, previous_text
from training.emoji.top_finetune import choose_epoch
from training.emoji.top_ship import (
    RUN_FILE,
    _save,
    check_fixed,
    fixed_epoch_problem,
    fold_path,
    main,
    run_fixed_epoch,
)


def test_fixed_epoch_overrides_the_validation_choice() -> None:
    sel = [0.9, 0.2, 0.3, 0.1, 0.4, 0.5]  # validation prefers the frozen head (epoch 0)
    assert choose_epoch(sel) == 0
    assert choose_epoch(sel, 5) == 5
    assert choose_epoch(sel, 0) == 0
    with pytest.raises(ValueError, match="not trained"):
        choose_epoch(sel, 6)  # only epochs 0-5 were trained
    with pytest.raises(ValueError, match="not trained"):
        choose_epoch(sel, -1)


def _fold(path: Path, epoch: int, scores: bool = True) -> None:
    info = {"settings": {"epochs": 5}, "santa": {"epoch": epoch, "threshold0": 0.5}}
    arrays = {"santa_scores0": np.zeros(3), "santa_y": np.zeros(3, np.int64)}
    if epoch:
        info["santa"][f"threshold{epoch}"] = 0.2
        if scores:
            arrays[f"santa_scores{epoch}"] = np.ones(3)
    _save(path, arrays, info)


def test_a_fold_is_reused_only_if_it_is_the_fixed_epochs(tmp_path: Path) -> None:
    _fold(tmp_path / "a.npz", 5)
    assert fixed_epoch_problem(tmp_path / "a.npz", 5) is None
    _fold(tmp_path / "b.npz", 0)  # validation kept the frozen head: a different procedure
    assert "santa epoch 0, not 5" in str(fixed_epoch_problem(tmp_path / "b.npz", 5))
    _fold(tmp_path / "c.npz", 1)
    assert "santa epoch 1, not 5" in str(fixed_epoch_problem(tmp_path / "c.npz", 5))
    _fold(tmp_path / "d.npz", 5, scores=False)
    assert "no scores" in str(fixed_epoch_problem(tmp_path / "d.npz", 5))


def test_folds_step_refuses_a_fold_of_another_epoch_before_training(tmp_path: Path) -> None:
    _fold(fold_path(tmp_path, "noto"), 0)
    with pytest.raises(ValueError, match="santa epoch 0, not 5"):
        main(["--run-dir", str(tmp_path), "--step", "folds", "--styles", "noto",
              "--fixed-epoch", "5"])  # fmt: skip


def _run(run_dir: Path, epoch: int, fixed: int | None, shift: float) -> None:
    """7 fold files (10 Santas among 110 per style), every fold taken at `epoch`; `fixed`:
    recorded as the run's fixed epoch, as `--fixed-epoch` does."""
    rng = np.random.default_rng(0)
    for style in STYLES:
        y = np.r_[np.zeros(100, np.int64), np.ones(10, np.int64)]
        s = np.r_[rng.uniform(0, 0.45, 100), np.full(10, 0.475)]
        s = s + (shift if style == "noto" else 0.0)
        info = {"validation_style": "twemoji", "settings": {"epochs": 5},
                "santa": {"epoch": epoch, "threshold0": 0.5, f"threshold{epoch}": 0.46}}  # fmt: skip
        arrays = {"santa_scores0": s, f"santa_scores{epoch}": s, "santa_y": y}
        _save(fold_path(run_dir, style), arrays, info)
    if fixed is not None:
        check_fixed(run_dir, fixed)


def test_card_says_how_the_fold_epoch_was_set_and_names_the_first_estimate(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    _run(first, 1, None, 0.45)  # validation-chosen epochs, one fold's scale off
    _run(second, 5, 5, 0.0)
    a, b = ts.summarise_folds(first), ts.summarise_folds(second)
    assert ts.fixed_epoch(a) is None and ts.fixed_epoch(b) == 5
    assert "Chosen epochs: noto 1" in epoch_text(a, 5)[0]
    assert "taken at epoch 5" in epoch_text(b, 5)[0] and epoch_text(b, 5)[1].endswith("fixed")
    text = previous_text(a, b)
    # the first run's pooled cut suffers from noto's shifted scale; the second's does not
    assert a["pooled"]["finetuned"]["recall_at_1pct_fpr"]["k"] == 10
    assert b["pooled"]["finetuned"]["recall_at_1pct_fpr"]["k"] == 70
    assert "one pooled cut 10/70" in text and "one pooled cut 70/70" in text
    assert "second estimate" in text


def test_a_run_keeps_one_procedure(tmp_path: Path) -> None:
    _run(tmp_path, 5, 5, 0.0)  # 7 folds at epoch 5, recorded as a fixed-epoch-5 run
    assert run_fixed_epoch(tmp_path) == 5 and (tmp_path / RUN_FILE).is_file()
    with pytest.raises(ValueError, match="--fixed-epoch 5"):
        check_fixed(tmp_path, None)  # resuming it with validation-chosen epochs
    with pytest.raises(ValueError, match="--fixed-epoch 5"):
        check_fixed(tmp_path, 3)
    _fold(fold_path(tmp_path, "noto"), 0)  # a fold of another procedure slipped in
    with pytest.raises(ValueError, match="noto is epoch 0"):
        ts.summarise_folds(tmp_path)
    with pytest.raises(ValueError, match="santa epoch 0, not 5"):
        check_fixed(tmp_path, 5)
