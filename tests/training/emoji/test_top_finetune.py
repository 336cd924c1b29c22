"""training.emoji.top_finetune: the imagenet graph cut at block15's input, the rest rebuilt in
Keras (real bundle, real onnxruntime), and one fold of fine-tuning on a few pictures."""

from __future__ import annotations

import numpy as np
import pytest

from tests.images import rectangles
from training.emoji import top_finetune as tt
from training.emoji.catalog import STYLES
from training.emoji.top_cache import CUT, CutBackbone
from training.emoji.top_report import report

pytestmark = pytest.mark.slow  # imports TensorFlow (~10 s)


def test_rebuilt_top_matches_the_onnx_embedding() -> None:
    backbone = CutBackbone(threads=1)
    cut, emb, probs = backbone(rectangles(8))
    assert cut.shape == (8, 7, 7, 192) and emb.shape == (8, 1280) and probs.shape == (8, 1000)
    ops = tt.top_ops()
    assert [o["op"] for o in ops].count("conv") == 4  # expand, depthwise, project, head
    got = tt.embed(tt.build_top(ops), cut)
    # float16 cut tensor (as cached): the embedding stays within 1e-2 of onnxruntime's
    np.testing.assert_allclose(got, emb, atol=1e-2)
    exact, want = backbone.session.run([CUT, "embedding"], {"image": rectangles(4, seed=1)})
    np.testing.assert_allclose(
        tt.embed(tt.build_top(ops), exact.transpose(0, 2, 3, 1)), want, atol=1e-4
    )


def test_validation_style_is_never_the_held_out_one_nor_high_contrast() -> None:
    for style in STYLES:
        v = tt.validation_style(style)
        assert v != style and v != "fluent-high-contrast" and v in STYLES


def test_one_fold_trains_and_reports_both_tasks() -> None:
    names = list(STYLES)[:3]  # noto held out, twemoji validates, openmoji-color trains
    n = 30
    backbone = CutBackbone(threads=1)
    cut, emb, _ = backbone(rectangles(n, seed=2))
    y = np.zeros((n, 2), np.int64)
    y[::5, 0] = 1  # every style gets Santas and birds (labels are arbitrary here)
    y[1::5, 1] = 1
    y[2, 1] = -1  # a bird-unlabelled picture (feather/wing) is masked out of the bird loss
    d = tt.Data(
        np.array([names[i % 3] for i in range(n)]),
        np.ones(n, bool),
        cut,
        y,
        np.zeros(n, np.float32),
        emb,
    )
    fold = tt.run_fold(d, "noto", (), epochs=1, n_neg=5, lr=1e-3, seed=0)
    assert fold["validation_style"] == "twemoji"
    for task in ("santa", "bird"):
        r = fold[task]
        assert r["epoch"] in (0, 1)
        assert len(r["scores0"]) == int((y[::3, ["santa", "bird"].index(task)] >= 0).sum())
        out = report(task, {"noto": fold})
        assert out["pooled"]["frozen"]["n"] == len(r["y"])
    # top_ship --fixed-epoch: the last epoch for both tasks, whatever validation prefers
    fixed = tt.run_fold(d, "noto", (), epochs=1, n_neg=5, lr=1e-3, seed=0, fixed_epoch=1)
    for task in ("santa", "bird"):
        assert fixed[task]["epoch"] == 1 and {"threshold1", "scores1"} <= set(fixed[task])
