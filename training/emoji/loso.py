"""Leave-one-style-out (LOSO) training and evaluation of binary heads on emoji art.

For each style h: train on the other styles (un-augmented + augmented views), choose the
regularisation C and the decision threshold on *validation* scores obtained by an inner
leave-one-style-out over the training styles only, then score the held-out style h once.
Per-style and pooled figures carry n and Wilson 95% intervals (app.metrics). The shipped head
is trained on all styles with C and the threshold chosen the same way one level up (on the
LOSO scores, which no shipped parameter was fitted on). The tasks and their decision rule are
in training.emoji.tasks, the per-style features it works on in training.emoji.style_sets.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from app.metrics import (
    Calibration,
    calibrate_threshold,
    recall_at_fpr,
    roc_auc,
    wilson_interval,
)
from training.emoji import wccn
from training.emoji.heads import LinearHead, fit_head
from training.emoji.identity import IdentityHead, fit_identity_head
from training.emoji.style_sets import PhotoSet, StyleSet, project, projection_for
from training.emoji.tasks import Task, decision_scores

MAX_FPR = 0.01
logger = logging.getLogger(__name__)

PHOTO_WEIGHT = 10.0
Setting = tuple[int, float, float]  # (augmented views used, C, hard-negative weight)
Head = LinearHead | IdentityHead


def train(
    task: Task,
    sets: dict[str, StyleSet],
    styles: Sequence[str],
    setting: Setting,
    photos: PhotoSet | None = None,
    photo_mask: npt.NDArray[np.bool_] | None = None,
) -> Head:
    n_aug, c, hard_w = setting
    if task.identity:
        return _train_identity(task, sets, styles, n_aug)
    xs, ys, ws = [], [], []
    for s in styles:
        st = sets[s]
        for i, (x, y) in enumerate([(st.x_base, st.y), *st.aug[:n_aug]]):
            xs.append(x)
            ys.append(y)
            hard = st.hard if i == 0 and st.hard is not None and hard_w != 1.0 else None
            ws.append(np.ones(len(x)) if hard is None else np.where(hard & (y == 0), hard_w, 1.0))
    if photos is not None:
        m = photo_mask if photo_mask is not None else np.ones(len(photos.y), bool)
        xs.append(photos.x[m])
        ys.append(photos.y[m])
        ws.append(np.full(int(m.sum()), PHOTO_WEIGHT))
    return fit_head(
        np.concatenate(xs),
        np.concatenate(ys),
        c=c,
        use_mass=task.use_mass,
        sample_weight=np.concatenate(ws),
    )


def _train_identity(
    task: Task, sets: dict[str, StyleSet], styles: Sequence[str], n_aug: int
) -> IdentityHead:
    xs, keys, positive = [], [], set()
    for s in styles:
        st = sets[s]
        if st.keys is None:
            raise ValueError(f"{task.name}: identity heads need the pictures' emoji keys")
        views = [(st.x_base, st.y, st.keys)] + [
            (x, y, k) for (x, y), k in zip(st.aug[:n_aug], st.aug_keys[:n_aug], strict=True)
        ]
        for x, y, k in views:
            xs.append(x)
            keys.extend(k.tolist())
            positive.update(k[y == 1].tolist())
    x = np.concatenate(xs)
    transform, shrink = None, None
    if task.identity_wccn:
        shrink, transform = _wccn(task, sets, styles, n_aug)
        x = (x @ transform).astype(np.float32)
    head = fit_identity_head(
        x,
        keys,
        frozenset(positive),
        l2=task.identity_l2,
        epochs=task.identity_epochs,
        seed=task.identity_seed,
    )
    return dataclasses.replace(head, transform=transform, shrink=shrink)


def _wccn(
    task: Task, sets: dict[str, StyleSet], styles: Sequence[str], n_aug: int
) -> tuple[float, npt.NDArray[np.float32]]:
    """The WCCN transform of these training styles, its shrinkage chosen by inner
    leave-one-style-out emoji identity (no task label, no held-out style; training.emoji.wccn)."""
    names = sorted({str(k) for s in styles for k in _all_keys(sets[s], n_aug)})
    index = {k: i for i, k in enumerate(names)}
    rows = {}
    for s in styles:
        st = sets[s]
        x = np.concatenate([st.x_base] + [a for a, _ in st.aug[:n_aug]])
        ids = np.asarray([index[str(k)] for k in _all_keys(st, n_aug)], np.int64)
        base_ids = np.asarray([index[str(k)] for k in _all_keys(st, 0)], np.int64)
        rows[s] = wccn.StyleRows(wccn.scatter(x, ids, len(names)), st.x_base, base_ids)
    shrink, accuracy = wccn.choose_shrink(rows, task.identity_wccn)
    logger.info(
        "%s: WCCN shrinkage %s (inner nearest-mean emoji accuracy %s)",
        task.name,
        shrink,
        {k: round(v, 4) for k, v in accuracy.items()},
    )
    return shrink, wccn.fit_whitening(rows, shrink)


def _all_keys(st: StyleSet, n_aug: int) -> list[str]:
    if st.keys is None:
        raise ValueError("identity heads need the pictures' emoji keys")
    return [*st.keys.tolist(), *(k for a in st.aug_keys[:n_aug] for k in a.tolist())]


def _calibrate(
    task: Task, scores: npt.NDArray[np.float64], y: npt.NDArray[np.int64]
) -> Calibration:
    return calibrate_threshold(scores, y == 1, task.rule, task.target)


def _selection_score(scores: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> float:
    """How C is chosen on validation: recall at 1% false positives, then ROC AUC."""
    return recall_at_fpr(scores, y == 1, MAX_FPR).recall + 1e-3 * roc_auc(scores, y == 1)


def choose_on_validation(
    task: Task, sets: dict[str, StyleSet], styles: Sequence[str], photos: PhotoSet | None
) -> tuple[Setting, Calibration, dict[str, Any]]:
    """Augmented views, C and threshold from inner leave-one-style-out scores over `styles`."""
    best: tuple[float, Setting, npt.NDArray[np.float64], npt.NDArray[np.int64]] | None = None
    for c in itertools.product(task.aug_options, task.cs, task.hard_weights):
        scores, ys = [], []
        for v in styles:
            head = train(task, sets, [s for s in styles if s != v], c, photos)
            scores.append(decision_scores(task, head.score(sets[v].x_base), sets[v].mass))
            ys.append(sets[v].y)
        s, y = np.concatenate(scores), np.concatenate(ys)
        sel = _selection_score(s, y)
        if best is None or sel > best[0]:
            best = (sel, c, s, y)
    assert best is not None
    _, c, s, y = best
    cal = _calibrate(task, s, y)
    chosen = {
        "aug_views": c[0],
        "c": c[1],
        "hard_weight": c[2],
        "n_validation": len(y),
        "calibration": cal.to_dict(),
    }
    return c, cal, chosen


def interval(k: int, n: int) -> dict[str, float | int]:
    if n == 0:
        return {"k": 0, "n": 0}
    iv = wilson_interval(k, n)
    return {"k": k, "n": n, "estimate": iv.estimate, "low": iv.low, "high": iv.high}


def summarise(
    scores: npt.NDArray[np.float64],
    y: npt.NDArray[np.int64],
    threshold: float | npt.NDArray[np.float64],
) -> dict[str, Any]:
    """Figures at the calibrated threshold(s) plus threshold-free ranking figures."""
    pred = scores >= threshold
    pos = y == 1
    tp, fp = int(np.sum(pred & pos)), int(np.sum(pred & ~pos))
    fn, tn = int(np.sum(~pred & pos)), int(np.sum(~pred & ~pos))
    out: dict[str, Any] = {
        "n": len(y),
        "n_positive": int(pos.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": interval(tp, tp + fp),
        "recall": interval(tp, tp + fn),
        "false_positive_rate": interval(fp, fp + tn),
    }
    if 0 < pos.sum() < len(y):
        at = recall_at_fpr(scores, pos, MAX_FPR)
        out["roc_auc"] = roc_auc(scores, pos)
        out["recall_at_1pct_fpr"] = interval(at.tp, at.tp + at.fn)
    return out


def run_loso(
    task: Task, sets: dict[str, StyleSet], photos: PhotoSet | None = None
) -> dict[str, Any]:
    """The outer loop: per held-out style, and pooled over all folds."""
    if task.identity:
        return _run_loso_identity(task, sets)
    styles = list(sets)
    folds: dict[str, Any] = {}
    all_s, all_y, all_t = [], [], []
    for h in styles:
        train_styles = [s for s in styles if s != h]
        proj = projection_for(sets, train_styles, photos)
        psets, pphotos = project(sets, photos, proj)
        c, cal, chosen = choose_on_validation(task, psets, train_styles, pphotos)
        head = train(task, psets, train_styles, c, pphotos)
        scores = decision_scores(task, head.score(psets[h].x_base), sets[h].mass)
        folds[h] = {**summarise(scores, sets[h].y, cal.threshold), "chosen": chosen}
        folds[h]["threshold"] = cal.threshold
        folds[h]["head"] = head.with_projection(proj)
        logger.info("%s: held-out %s done, chosen %s", task.name, h, chosen)
        all_s.append(scores)
        all_y.append(sets[h].y)
        all_t.append(np.full(len(scores), cal.threshold))
    s, y, t = np.concatenate(all_s), np.concatenate(all_y), np.concatenate(all_t)
    pooled = summarise(s, y, t)
    return {"task": task.name, "folds": folds, "pooled": pooled, "scores": (s, y)}


def identity_setting(task: Task, sets: dict[str, StyleSet]) -> Setting:
    """An identity head's one setting: every augmented view, `identity_l2`."""
    return (min(len(s.aug) for s in sets.values()), task.identity_l2, 1.0)


def _run_loso_identity(task: Task, sets: dict[str, StyleSet]) -> dict[str, Any]:
    """Identity heads: one fit per fold (no inner search: a fit takes a minute, not a second).
    Fold h's threshold is the task's rule on the held-out scores of the other six folds, so
    no figure of style h is chosen on style h; the shipped threshold is the same rule on all
    seven (final_head)."""
    styles = list(sets)
    setting = identity_setting(task, sets)
    heads, scores = {}, {}
    for h in styles:
        heads[h] = train(task, sets, [s for s in styles if s != h], setting)
        scores[h] = decision_scores(task, heads[h].score(sets[h].x_base), sets[h].mass)
        logger.info("%s: identity head for held-out %s done", task.name, h)
    folds: dict[str, Any] = {}
    all_t = []
    for h in styles:
        others = [s for s in styles if s != h]
        cal = _calibrate(
            task,
            np.concatenate([scores[s] for s in others]),
            np.concatenate([sets[s].y for s in others]),
        )
        chosen = {
            "aug_views": setting[0],
            "c": setting[1],
            "hard_weight": setting[2],
            "n_validation": int(sum(len(sets[s].y) for s in others)),
            "calibration": cal.to_dict(),
            "threshold_from": "the other six styles' held-out scores",
        }
        shrink = getattr(heads[h], "shrink", None)
        if shrink is not None:
            chosen["wccn_shrink"] = shrink
        folds[h] = {**summarise(scores[h], sets[h].y, cal.threshold), "chosen": chosen}
        folds[h]["threshold"] = cal.threshold
        folds[h]["head"] = heads[h]
        all_t.append(np.full(len(scores[h]), cal.threshold))
    s = np.concatenate([scores[h] for h in styles])
    y = np.concatenate([sets[h].y for h in styles])
    pooled = summarise(s, y, np.concatenate(all_t))
    return {"task": task.name, "folds": folds, "pooled": pooled, "scores": (s, y)}


def final_head(
    task: Task, sets: dict[str, StyleSet], loso: dict[str, Any], photos: PhotoSet | None
) -> tuple[Head, Calibration, Setting]:
    """The shipped head: all styles; the setting most folds chose on their validation, the
    threshold by the task's rule on the pooled held-out scores."""
    s, y = loso["scores"]
    if task.identity:
        setting = identity_setting(task, sets)
        return train(task, sets, list(sets), setting), _calibrate(task, s, y), setting
    cs = [
        (f["chosen"]["aug_views"], f["chosen"]["c"], f["chosen"]["hard_weight"])
        for f in loso["folds"].values()
    ]
    c = max(sorted(set(cs)), key=cs.count)
    cal = _calibrate(task, s, y)
    proj = projection_for(sets, list(sets), photos)
    psets, pphotos = project(sets, photos, proj)
    return train(task, psets, list(sets), c, pphotos).with_projection(proj), cal, c


def photo_test(task: Task, head: Head, photos: PhotoSet, threshold: float) -> dict[str, Any]:
    """The shipped head's decisions on the labelled real photos (never trained on)."""
    scores = decision_scores(task, head.score(photos.x), photos.mass)
    out = summarise(scores, photos.y, threshold)
    out["lowest_bird"] = float(scores[photos.y == 1].min())
    out["highest_non_bird"] = float(scores[photos.y == 0].max())
    return out
