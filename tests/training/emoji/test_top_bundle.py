"""training.emoji.top_summary's figures and ship rule on fold files written like top_ship's, and
the CI check (training.emoji.check) of the shipped fine-tuned-top bundle through its served
graph: passes on the recorded counts, fails on a record that is off by two pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import DATA, ROOT
from training.emoji import top_summary as ts
from training.emoji.catalog import STYLES, load_catalog
from training.emoji.top_graph import TOP_FOLDS
from training.emoji.top_ship import _save, fold_path

pytestmark = (
    pytest.mark.slow
)  # fine-tuned tops composed and re-scored: out of the fast subset (round 28)


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
    summary = ts.summarise_folds(tmp_path)
    p = summary["pooled"]["finetuned"]
    assert p["n"] == 770 and p["n_positive"] == 70
    for style in STYLES:  # each style alone: every positive above its 1% FPR cut
        assert summary["folds"][style]["finetuned"]["recall_at_1pct_fpr"]["k"] == 10
    assert p["per_style_cuts"]["k"] == 70
    # pooled: the shifted styles' negatives sit above the others' positives
    assert p["recall_at_1pct_fpr"]["k"] == 20
    ok, why = ts.decide(summary)  # the per-style cuts decide; the pooled cut is reported
    assert ok and why.startswith("per-style cuts summed 70/70") and "pooled one cut 20/70" in why
    _fold_files(tmp_path, {})  # then two styles' positives below their negatives: 50/70 < 0.85
    _fold_files_ranked_low(tmp_path, list(STYLES)[:2])
    ok, why = ts.decide(ts.summarise_folds(tmp_path))
    assert not ok and "do not ship" in why and why.startswith("per-style cuts summed 50/70")


def _fold_files_ranked_low(run_dir: Path, styles: list[str]) -> None:
    """As _fold_files, but in `styles` every positive scores below every negative."""
    rng = np.random.default_rng(1)
    for style in styles:
        y = np.r_[np.zeros(100, np.int64), np.ones(10, np.int64)]
        s = np.r_[rng.uniform(0.5, 0.9, 100), np.full(10, 0.1)]
        info = {"validation_style": "noto", "santa": {"epoch": 0, "threshold0": 0.5}}
        _save(fold_path(run_dir, style), {"santa_scores0": s, "santa_y": y}, info)


def _top_bundle(
    root: Path, style: str, members: int = 1, task: str = "santa"
) -> tuple[Path, int, int, int]:
    """A fine-tuned-top bundle as top_bundle writes it, from perturbed imagenet weights (not a
    trained model): served graph with `members` tops, the fold of `style` others (stored as
    float16 differences; several members: their mean logit), its threshold in the widest gap
    of the middle scores and its counts computed in numpy (test_top_graph._numpy_logit) on
    the imagenet graph's cut tensors of the pictures the check scores (every positive + 10
    sampled negatives). bird: the graph keeps imagenet's top beside the members and decides
    "ImageNet bird mass >= 0.5 or head >= threshold" (top_bird). Returns the bundle, recorded
    tp and fp, and the number of positives."""
    import io

    import onnx
    from PIL import Image

    from app.bundle import load_bundle
    from app.bundle_write import write_bundle
    from app.imaging import ImageLimits, prepare
    from tests.training.emoji.test_top_graph import IMAGENET, _keras_layout_weights, _numpy_logit
    from training.emoji.check import style_sample
    from training.emoji.render import base_array
    from training.emoji.tasks import TASKS
    from training.emoji.top_cache import CUT, CutBackbone
    from training.emoji.top_graph import delta_key, fold_deltas, served_graph
    from training.imagenet import BIRD_INDICES

    bird = task == "bird"
    imagenet = load_bundle(ROOT / "models" / "imagenet")
    weights = [_keras_layout_weights(0.3, m) for m in range(members)]
    served, values = served_graph(IMAGENET, weights, combine_threshold=0.9 if bird else None)
    meta = load_bundle(ROOT / "models" / "santa", verify_hash=False).metadata
    meta = meta.model_copy(update={"name": task})
    bundle = write_bundle(root / task, model_bytes=served, metadata=meta,
                          labels=TASKS[task].labels)  # fmt: skip
    folds = [_keras_layout_weights(0.2, 10 + m) for m in range(members)]
    i = list(STYLES).index(style)
    pos, neg = style_sample(load_catalog(DATA, styles=[style]), TASKS[task], style, i, 10)
    pngs = []
    for p in pos + neg:
        buf = io.BytesIO()
        Image.fromarray(base_array(p, 224)).save(buf, format="PNG")
        pngs.append(prepare(buf.getvalue(), imagenet.metadata.input, ImageLimits()).array)
    cut, probs = CutBackbone(threads=1).session.run([CUT, "probs"], {"image": np.stack(pngs)})
    z = np.mean([_numpy_logit(cut.transpose(0, 2, 3, 1), f)[1] for f in folds], axis=0)
    score = 1.0 / (1.0 + np.exp(-z))
    srt = np.sort(score)  # threshold in the widest gap of the middle scores: none sits on it
    k = int(np.argmax(np.diff(srt[3:-3]))) + 3
    thr = float(srt[k] + srt[k + 1]) / 2
    hit = score >= thr
    if bird:
        hit |= probs[:, BIRD_INDICES].sum(axis=1) >= 0.5
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
    extra = {"first_member": np.asarray(1), "combine": np.asarray(True)} if bird else {}
    np.savez_compressed(
        bundle.path / TOP_FOLDS,
        task=np.asarray(task),
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
        **extra,
    )
    return bundle.path, tp, fp, len(pos)


@pytest.mark.parametrize(
    ("members", "task"),
    [
        (1, "santa"),
        pytest.param(3, "santa", marks=pytest.mark.slow),
        pytest.param(2, "bird", marks=pytest.mark.slow),  # 5 s; santa covers the fast subset
    ],
)
def test_check_rescores_a_fold_through_the_served_graph(
    tmp_path: Path, members: int, task: str
) -> None:
    from training.emoji.check import _Features, check_bundle
    from training.emoji.embed import BACKBONE, Backbone

    style = "fluent-high-contrast"  # 3 Santas (20 birds): the smallest style
    bundle, tp, fp, n_pos = _top_bundle(tmp_path, style, members, task)
    feats = _Features(Backbone(BACKBONE, threads=1))
    catalog = load_catalog(DATA, styles=[style])
    rows, problems = check_bundle(bundle, catalog, feats, 10, [style])
    assert not problems, problems
    # the served graph with the fold swapped in (onnxruntime, PNG path) = the numpy fold model
    assert rows[0]["recall"] == f"{tp}/{n_pos}" and rows[0]["FP (sample)"] == f"{fp}/10"
    assert 0 < tp < n_pos or task == "santa"  # bird: both sides of the fold's threshold
    # the same bundle with a record two pictures off must fail
    z = dict(np.load(bundle / TOP_FOLDS))
    i = list(STYLES).index(style)
    wrong = tp - 2 if tp >= 2 else tp + 2
    z["tp"][i], z["fn"][i] = wrong, n_pos - wrong
    np.savez_compressed(bundle / TOP_FOLDS, **z)
    _, problems = check_bundle(bundle, catalog, feats, 10, [style])
    assert any(f"recall {tp}/{n_pos} vs recorded {wrong}/{n_pos}" in p for p in problems), problems


def test_the_false_positive_check_is_an_exact_binomial_tail() -> None:
    from training.emoji.check import SIGNIFICANCE, binomial_tail

    assert binomial_tail(0, 100, 0.01) == 1.0
    assert abs(binomial_tail(1, 100, 0.01) - (1 - 0.99**100)) < 1e-12
    # 3 of 100 at a recorded 1.01%: 8% (Wilson's lower bound, 1.03%, would call it significant)
    assert 0.07 < binomial_tail(3, 100, 0.0101) < 0.09 > SIGNIFICANCE
    assert binomial_tail(6, 100, 0.0101) < SIGNIFICANCE  # twice as many is a real change
    assert binomial_tail(1, 100, 0.0) == 0.0  # any false positive where none were recorded


def _bird_folds(run_dir: Path, seed: int, photo_fp: str | None = None) -> None:
    """bird fold files of one member: per style 200 negatives U(0, 0.9) and 20 birds, 10 of
    them at 0.95 and 10 at U(0, 0.9); the fold threshold 0.92; 73 photos (3 birds at 1.0, the
    mass rule, and 70 non-birds at 0.1), one non-bird at 0.99 in the fold `photo_fp`."""
    rng = np.random.default_rng(seed)
    for style in STYLES:
        y = np.r_[np.zeros(200, np.int64), np.ones(20, np.int64)]
        s = np.r_[rng.uniform(0, 0.9, 200), np.full(10, 0.95), rng.uniform(0, 0.9, 10)]
        photo_y = np.r_[np.ones(3, np.int64), np.zeros(70, np.int64)]
        photo = np.r_[np.ones(3), np.full(70, 0.1)]
        if style == photo_fp:
            photo[5] = 0.99
        info = {
            "validation_style": "noto",
            "santa": {"epoch": 5, "threshold0": 0.5, "threshold5": 0.5},
            "bird": {"epoch": 5, "threshold0": 0.5, "threshold5": 0.92},
        }
        arrays = {"bird_scores0": s, "bird_scores5": s, "bird_y": y,
                  "bird_photo_scores": photo, "bird_photo_y": photo_y}  # fmt: skip
        _save(fold_path(run_dir, style), arrays, info)
    (run_dir / "run.json").write_text('{"fixed_epoch": 5}\n')


def test_bird_members_are_averaged_and_decided_with_their_photos(tmp_path: Path) -> None:
    dirs = [tmp_path / f"seed-{k}" for k in range(3)]
    for k, d in enumerate(dirs):
        d.mkdir()
        _bird_folds(d, k)
    summary = ts.summarise_folds(dirs, "bird")
    p = summary["pooled"]["finetuned"]
    assert summary["task"] == "bird" and p["n_positive"] == 140 and p["n"] == 7 * 220
    # the 70 birds at 0.95 in every member are found; the mean logit of three U(0, 0.9)
    # negatives never reaches 0.92
    assert p["tp"] >= 70 and p["fp"] == 0
    assert all(f["photos"] == {"birds_found": 3, "birds": 3, "non_birds_flagged": 0,
                               "non_birds": 70} for f in summary["folds"].values())  # fmt: skip
    ok, why = ts.decide(summary)
    assert ok and why.endswith("photos: every fold right: ship"), why
    # one member alone flagging a non-bird photo at 0.99 is outvoted (mean logit -> 0.52)
    _bird_folds(dirs[0], 0, photo_fp="twemoji")
    assert ts.decide(ts.summarise_folds(dirs, "bird"))[0]
    for k, d in enumerate(dirs):  # every member flags it: the fold model is wrong on a photo
        _bird_folds(d, k, photo_fp="twemoji")
    ok, why = ts.decide(ts.summarise_folds(dirs, "bird"))
    assert not ok and "wrong in twemoji" in why and why.endswith("do not ship")
    # fewer birds than v1 found (32 of 140): no
    for k, d in enumerate(dirs):
        _bird_folds(d, k)
    summary = ts.summarise_folds(dirs, "bird")
    for f in summary["folds"].values():
        f["finetuned"]["tp"] = 4
    summary["pooled"]["finetuned"]["tp"] = 28
    assert not ts.decide(summary)[0]


def test_the_served_rule_is_scored_with_each_styles_threshold_chosen_without_it(
    tmp_path: Path,
) -> None:
    """noto's whole scale is shifted up by 0.45: a threshold chosen on the six other styles
    (between their negatives, below 0.45, and their positives at 0.475) flags nearly all of
    noto's negatives, which a threshold chosen on all seven would partly hide."""
    _fold_files(tmp_path, {"noto": 0.45})
    summary = ts.summarise_folds(tmp_path)
    nested = ts.served_rule_loso(summary, "max_f1", None)
    t = nested["thresholds"]
    assert 0.45 <= t["noto"] <= 0.475  # chosen on the six unshifted styles only
    assert all(t[s] == t["twemoji"] for s in list(STYLES)[2:])  # the same six-style pools
    assert nested["n"] == 770 and nested["tp"] == 70
    assert nested["fp"] >= 85  # noto's negatives, U(0.45, 0.9), nearly all above 0.475
    assert nested["thresholds"].keys() == set(STYLES)


def test_features_are_cached_per_presentation_not_per_name() -> None:
    """Two presentations that share a function name (closures made by one factory) are two
    cache entries: keying by name once gave every later presentation the first one's features."""
    import io

    from training.emoji.check import _Features
    from training.emoji.embed import BACKBONE, Backbone
    from training.emoji.render import load_rgba, on_background

    def rendered(size: int) -> Any:
        def present(p: Any) -> bytes:
            buf = io.BytesIO()
            on_background(load_rgba(p, size)).save(buf, format="PNG")
            return buf.getvalue()

        return present

    pics = load_catalog(DATA, styles=["fluent-high-contrast"])[:2]
    feats = _Features(Backbone(BACKBONE, threads=1))
    big, tiny = rendered(224), rendered(16)
    assert big.__name__ == tiny.__name__
    emb_big, _ = feats(pics, present=big)
    emb_tiny, _ = feats(pics, present=tiny)
    assert np.abs(emb_big - emb_tiny).max() > 0.1
    again, _ = feats(pics, present=big)  # a cache hit returns the same features
    np.testing.assert_array_equal(again, emb_big)
