"""training.emoji.top_bundle's figures and ship rule on fold files written like top_ship's, and
the CI check (training.emoji.check) of the shipped fine-tuned-top bundle through its served
graph: passes on the recorded counts, fails on a record that is off by two pictures."""

from __future__ import annotations

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
    ok, why = tb.decide(summary)  # the per-style cuts decide; the pooled cut is reported
    assert ok and why.startswith("per-style cuts summed 70/70") and "pooled one cut 20/70" in why
    _fold_files(tmp_path, {})  # then two styles' positives below their negatives: 50/70 < 0.85
    _fold_files_ranked_low(tmp_path, list(STYLES)[:2])
    ok, why = tb.decide(tb.summarise_folds(tmp_path))
    assert not ok and "do not ship" in why and why.startswith("per-style cuts summed 50/70")


def _fold_files_ranked_low(run_dir: Path, styles: list[str]) -> None:
    """As _fold_files, but in `styles` every positive scores below every negative."""
    rng = np.random.default_rng(1)
    for style in styles:
        y = np.r_[np.zeros(100, np.int64), np.ones(10, np.int64)]
        s = np.r_[rng.uniform(0.5, 0.9, 100), np.full(10, 0.1)]
        info = {"validation_style": "noto", "santa": {"epoch": 0, "threshold0": 0.5}}
        _save(fold_path(run_dir, style), {"santa_scores0": s, "santa_y": y}, info)


def _top_bundle(root: Path, style: str, members: int = 1) -> tuple[Path, int, int]:
    """A fine-tuned-top bundle as top_bundle writes it, from perturbed imagenet weights (not a
    trained model): served graph with `members` tops, the fold of `style` others (stored as
    float16 differences; several members: their mean logit), its threshold between two middle scores and its counts computed in numpy
    (test_top_graph._numpy_top) on the imagenet graph's cut tensors of the pictures the check
    scores (every Santa + 10 sampled negatives). Returns the bundle, recorded tp and fp."""
    import io

    import onnx
    from PIL import Image

    from app.bundle import load_bundle
    from app.bundle_write import write_bundle
    from app.imaging import ImageLimits, prepare
    from tests.training.emoji.test_top_graph import IMAGENET, _keras_layout_weights, _numpy_logit
    from training.emoji.check import style_sample
    from training.emoji.loso import TASKS
    from training.emoji.render import base_array
    from training.emoji.top_cache import CUT, CutBackbone
    from training.emoji.top_graph import delta_key, fold_deltas, served_graph

    imagenet = load_bundle(ROOT / "models" / "imagenet")
    served, values = served_graph(IMAGENET, [_keras_layout_weights(0.3, m) for m in range(members)])
    meta = load_bundle(ROOT / "models" / "santa", verify_hash=False).metadata
    bundle = write_bundle(root / "santa", model_bytes=served, metadata=meta,
                          labels=("not_santa", "santa"))  # fmt: skip
    folds = [_keras_layout_weights(0.2, 10 + m) for m in range(members)]
    i = list(STYLES).index(style)
    pos, neg = style_sample(load_catalog(DATA, styles=[style]), TASKS["santa"], style, i, 10)
    pngs = []
    for p in pos + neg:
        buf = io.BytesIO()
        Image.fromarray(base_array(p, 224)).save(buf, format="PNG")
        pngs.append(prepare(buf.getvalue(), imagenet.metadata.input, ImageLimits()).array)
    (cut,) = CutBackbone(threads=1).session.run([CUT], {"image": np.stack(pngs)})
    z = np.mean([_numpy_logit(cut.transpose(0, 2, 3, 1), f)[1] for f in folds], axis=0)
    score = 1.0 / (1.0 + np.exp(-z))
    srt = np.sort(score)  # threshold in the widest gap of the middle scores: none sits on it
    k = int(np.argmax(np.diff(srt[3:-3]))) + 3
    thr = float(srt[k] + srt[k + 1]) / 2
    hit = score >= thr
    tp, fp = int(hit[: len(pos)].sum()), int(hit[len(pos) :].sum())
    names = sorted(fold_deltas(onnx.load(str(IMAGENET)), folds[0]))
    stored = {
        delta_key(i, m, k, members): d[name]
        for m, d in enumerate(fold_deltas(onnx.load(str(IMAGENET)), f) for f in folds)
        for k, name in enumerate(names)
    }
    assert len(values) == len(names) * members
    n = len(STYLES)
    w = np.stack([np.asarray(f["head_w"], np.float32) for f in folds])
    b = np.asarray([float(f["head_b"]) for f in folds])
    np.savez_compressed(
        bundle.path / TOP_FOLDS,
        task=np.asarray("santa"),
        backbone_sha256=np.asarray(imagenet.metadata.artifact.sha256),
        styles=np.asarray(list(STYLES)),
        names=np.asarray(names),
        w=np.tile(w[0] if members == 1 else w, (n, 1) if members == 1 else (n, 1, 1)),
        b=np.full(n, b[0]) if members == 1 else np.tile(b, (n, 1)),
        threshold=np.full(n, thr),
        epoch=np.ones(n, np.int64),
        tp=np.full(n, tp),
        fn=np.full(n, len(pos) - tp),
        fp=np.full(n, fp),
        tn=np.full(n, len(neg) - fp),
        **stored,
    )
    return bundle.path, tp, fp


@pytest.mark.parametrize("members", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_check_rescores_a_fold_through_the_served_graph(tmp_path: Path, members: int) -> None:
    from training.emoji.check import _Features, check_bundle
    from training.emoji.embed import BACKBONE, Backbone

    style = "fluent-high-contrast"  # 3 Santas: the smallest style
    bundle, tp, fp = _top_bundle(tmp_path, style, members)
    feats = _Features(Backbone(BACKBONE, threads=1))
    catalog = load_catalog(DATA, styles=[style])
    rows, problems = check_bundle(bundle, catalog, feats, 10, [style])
    assert not problems, problems
    # the served graph with the fold swapped in (onnxruntime, PNG path) = the numpy fold model
    assert rows[0]["recall"] == f"{tp}/3" and rows[0]["FP (sample)"] == f"{fp}/10"
    # the same bundle with a record two pictures off must fail
    z = dict(np.load(bundle / TOP_FOLDS))
    i = list(STYLES).index(style)
    wrong = tp - 2 if tp >= 2 else tp + 2
    z["tp"][i], z["fn"][i] = wrong, 3 - wrong
    np.savez_compressed(bundle / TOP_FOLDS, **z)
    _, problems = check_bundle(bundle, catalog, feats, 10, [style])
    assert any(f"recall {tp}/3 vs recorded {wrong}/3" in p for p in problems), problems


def test_the_false_positive_check_is_an_exact_binomial_tail() -> None:
    from training.emoji.check import SIGNIFICANCE, binomial_tail

    assert binomial_tail(0, 100, 0.01) == 1.0
    assert abs(binomial_tail(1, 100, 0.01) - (1 - 0.99**100)) < 1e-12
    # 3 of 100 at a recorded 1.01%: 8% (Wilson's lower bound, 1.03%, would call it significant)
    assert 0.07 < binomial_tail(3, 100, 0.0101) < 0.09 > SIGNIFICANCE
    assert binomial_tail(6, 100, 0.0101) < SIGNIFICANCE  # twice as many is a real change
    assert binomial_tail(1, 100, 0.0) == 0.0  # any false positive where none were recorded
