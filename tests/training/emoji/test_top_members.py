"""training.emoji.top_members: members' fold files (as top_ship writes them) averaged in logit
space, and the figures of the average, on scores built so that each member alone misranks
some pictures and their average does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.emoji import top_members as tm
from training.emoji.catalog import STYLES
from training.emoji.top_ship import _save, fold_path


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _member(run_dir: Path, noise_sign: float) -> None:
    """Per style 200 negatives and 4 positives, both tasks. True logits: negatives -2,
    positives +2; each member adds +-3 to half of them (opposite halves per member), so a
    member alone puts some negatives at +1 above positives at -1, their mean is exact."""
    y = np.r_[np.zeros(200, np.int64), np.ones(4, np.int64)]
    base = np.where(y == 1, 2.0, -2.0)
    noise = np.where(np.arange(len(y)) % 2 == 0, 3.0, -3.0) * noise_sign
    for style in STYLES:
        arrays = {}
        info = {"validation_style": "noto", "settings": {"seed": int(noise_sign > 0)}}
        for task, thr in (("santa", 0.0), ("bird", 0.5)):
            arrays[f"{task}_scores5"] = _sigmoid(base + noise).astype(np.float32)
            arrays[f"{task}_y"] = y
            info[task] = {"epoch": 5, "threshold5": float(_sigmoid(np.asarray(thr)))}
        _save(fold_path(run_dir, style), arrays, info)


def test_the_mean_logit_of_two_members_and_its_figures(tmp_path: Path) -> None:
    a, b = tmp_path / "s0", tmp_path / "s1"
    a.mkdir(), b.mkdir()
    _member(a, 1.0), _member(b, -1.0)
    for task, thr in (("santa", 0.0), ("bird", 0.5)):
        ma, mb = tm.member_folds(a, task), tm.member_folds(b, task)
        alone = tm.figures(ma)
        assert alone["n"] == 7 * 204 and alone["positives"] == 28
        # half the negatives at logit +1 sit above half the positives at -1
        assert alone["roc_auc"] < 0.9 and alone["pooled_cut"] < 28
        ens = tm.average([ma, mb])
        np.testing.assert_allclose(ens[0].z, np.where(ens[0].y == 1, 2.0, -2.0), atol=1e-4)
        assert ens[0].threshold == pytest.approx(thr)
        f = tm.figures(ens)
        assert f["per_style_cuts"] == f["pooled_cut"] == f["tp"] == f["flagged"] == 28
        assert f["roc_auc"] == pytest.approx(1.0)


def test_members_that_scored_different_pictures_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "s0", tmp_path / "s1"
    a.mkdir(), b.mkdir()
    _member(a, 1.0), _member(b, -1.0)
    mb = tm.member_folds(b, "santa")
    mb[0] = tm.Fold(mb[0].style, mb[0].y[::-1].copy(), mb[0].z, mb[0].threshold)
    with pytest.raises(ValueError, match="different pictures"):
        tm.average([tm.member_folds(a, "santa"), mb])


def test_cli_prints_each_member_and_the_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "s0", tmp_path / "s1"
    a.mkdir(), b.mkdir()
    _member(a, 1.0), _member(b, -1.0)
    tm.main([str(a), str(b)])
    out = capsys.readouterr().out
    assert "| mean logit of 2 | 28/28 | 28/28 | 1.0000 | 28/28 | 28/28 |" in out
    assert out.count(str(a)) == 2 and "noto 4/4" in out
