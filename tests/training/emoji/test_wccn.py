"""training.emoji.wccn: within-emoji covariance normalisation of the identity head's input, its
shrinkage chosen by inner leave-one-style-out emoji identity, and its fold into the head."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.training.emoji.test_identity import BIRDS, TOY, _sets
from training.emoji import wccn
from training.emoji.check import _fold_logits, save_fold_heads
from training.emoji.identity import fit_identity_head
from training.emoji.loso import _train_identity


def _rows(
    rng: np.random.Generator, n_keys: int = 5, per_key: int = 30, nuisance: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Each emoji a centroid in dims 0-2; dims 3-5 carry large within-emoji (style) noise."""
    centroids = np.random.default_rng(7).normal(size=(n_keys, 3))
    ids = np.repeat(np.arange(n_keys), per_key)
    x = np.concatenate(
        [
            centroids[ids] + rng.normal(scale=0.1, size=(len(ids), 3)),
            rng.normal(scale=nuisance, size=(len(ids), 3)),
        ],
        axis=1,
    )
    return x.astype(np.float32), ids.astype(np.int64)


def test_within_covariance_is_the_scatter_about_each_emojis_mean() -> None:
    rng = np.random.default_rng(0)
    x1, k1 = _rows(rng)
    x2, k2 = _rows(rng, per_key=10)
    pooled = wccn.scatter(x1, k1, 5) + wccn.scatter(x2, k2, 5)
    x, k = np.concatenate([x1, x2]).astype(np.float64), np.concatenate([k1, k2])
    means = np.stack([x[k == i].mean(axis=0) for i in range(5)])
    r = x - means[k]
    assert np.allclose(wccn.within_covariance(pooled), r.T @ r / len(x), atol=1e-9)
    assert pooled.n == len(x) and np.array_equal(pooled.counts, np.bincount(k, minlength=5))


def test_whitening_undoes_the_shrunk_within_covariance_in_float16_values() -> None:
    x, k = _rows(np.random.default_rng(1))
    sw = wccn.within_covariance(wccn.scatter(x, k, 5))
    for shrink in (0.05, 1.0):
        t = wccn.whitening(sw, shrink)
        assert np.array_equal(t, t.astype(np.float16).astype(np.float32))
        target = (1 - shrink) * sw + shrink * np.trace(sw) / len(sw) * np.eye(len(sw))
        assert np.allclose(t.astype(np.float64) @ target @ t, np.eye(len(sw)), atol=5e-3)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="shrinkage"):
            wccn.whitening(sw, bad)


def test_the_inner_choice_prefers_whitening_when_style_noise_hides_the_emoji() -> None:
    rng = np.random.default_rng(2)
    styles = {}
    for s in "abc":
        x, k = _rows(rng)
        styles[s] = wccn.StyleRows(wccn.scatter(x, k, 5), x, k)
    train = styles["a"].scatter + styles["b"].scatter
    plain = wccn.nearest_mean_accuracy(train, styles["c"].x_base, styles["c"].base_ids, 1.0)
    white = wccn.nearest_mean_accuracy(train, styles["c"].x_base, styles["c"].base_ids, 0.01)
    assert white > 0.85 and plain < 0.4, (white, plain)
    best, acc = wccn.choose_shrink(styles, (0.01, 1.0))
    assert best == 0.01 and acc[0.01] > acc[1.0]
    # Without style noise, whitening has nothing to remove: ties go to the milder shrinkage.
    quiet = {}
    for s in "abc":
        x, k = _rows(rng, nuisance=0.0)
        quiet[s] = wccn.StyleRows(wccn.scatter(x, k, 5), x, k)
    assert wccn.choose_shrink(quiet, (0.3, 1.0))[0] == 1.0
    with pytest.raises(ValueError, match="two training styles"):
        wccn.choose_shrink({"a": styles["a"]}, (0.1,))


def test_a_folded_transform_scores_raw_features_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x, k = _rows(rng)
    keys = np.asarray(["dove", "owl", "whale", "rabbit", "pear"])[k]
    t = wccn.whitening(wccn.within_covariance(wccn.scatter(x, k, 5)), 0.1)
    head = fit_identity_head(x @ t, keys.tolist(), frozenset(BIRDS), l2=1e-4, epochs=3, seed=0)
    with_t = dataclasses.replace(head, transform=t, shrink=0.1)
    assert np.allclose(with_t.logits(x), head.logits(x @ t), atol=1e-6)
    folds = {"a": {"head": with_t, "threshold": 0.5, "tp": 1, "fn": 0, "fp": 0, "tn": 1}}
    path = tmp_path / "loso-heads.npz"
    save_fold_heads(path, TOY, {"folds": folds}, "sha")
    assert np.array_equal(_fold_logits(np.load(path), 0, x), with_t.logits(x))


@pytest.mark.slow
def test_an_identity_task_with_wccn_trains_on_whitened_features() -> None:
    task = dataclasses.replace(TOY, identity_epochs=2, identity_wccn=(0.1, 1.0))
    sets = _sets()
    head = _train_identity(task, sets, ["a", "b", "c"], 1)
    assert head.shrink in (0.1, 1.0) and head.transform is not None
    assert head.transform.shape == (8, 8)
    plain = _train_identity(TOY, sets, ["a", "b", "c"], 1)
    assert plain.transform is None and plain.shrink is None
