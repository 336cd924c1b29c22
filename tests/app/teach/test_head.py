"""The numpy head against scikit-learn's LogisticRegression on the same splits, on real
embeddings (shipped `products` backbone, Fashion-MNIST test images), plus the split rules."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from app.bundle import load_bundle
from app.imaging import ImageLimits, prepare
from app.runtime import OnnxModel
from app.teach.head import fit_head, unit
from app.teach.validate import HOLDOUT_MIN_ITEMS, stratified_folds, stratified_holdout, validate
from tests.app.teach.conftest import fm_test_split
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def one_blas_thread():  # type: ignore[no-untyped-def]
    """As the teach jobs run: small products are ~15x slower on a contended BLAS pool."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def fm_embeddings() -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings of the first 60 test images of each Fashion-MNIST class (n=600)."""
    model = OnnxModel(load_bundle(ROOT / "models" / "products"), ["CPUExecutionProvider"], 1)
    x, y = fm_test_split()
    idx = np.concatenate([np.flatnonzero(y == c)[:60] for c in range(10)])
    spec = model.bundle.metadata.input
    from tests.app.teach.conftest import png

    batch = np.stack([prepare(png(x[i]), spec, ImageLimits()).array for i in idx])
    out = model.run(batch.astype(np.float32))
    assert out.embedding is not None
    return unit(out.embedding), y[idx].astype(np.int64)


@pytest.mark.slow
def test_head_matches_sklearn_on_the_same_split(fm_embeddings) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    x, y = fm_embeddings
    train, test = stratified_holdout(y, 0.3, np.random.default_rng(0))
    ours = fit_head(x[train], y[train], 10, l2=1e-3)
    acc_ours = float((ours.predict_proba(x[test]).argmax(1) == y[test]).mean())
    # Same objective: weighted mean log-loss + l2/2 |W|^2 on standardised features
    # <=> C = 1 / (l2 * n) in sklearn's summed-loss form.
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    ref = LogisticRegression(C=1.0 / (1e-3 * len(train)), class_weight="balanced", max_iter=2000)
    ref.fit((x[train] - mu) / sd, y[train])
    acc_ref = float((ref.predict((x[test] - mu) / sd) == y[test]).mean())
    print(f"held-out accuracy n={len(test)}: numpy head {acc_ours:.3f}, sklearn {acc_ref:.3f}")
    assert acc_ours >= acc_ref - 0.02
    # Same model, so the predictions mostly agree item by item.
    agree = (ours.predict_proba(x[test]).argmax(1) == ref.predict((x[test] - mu) / sd)).mean()
    assert agree >= 0.95


@pytest.mark.slow
def test_validation_never_scores_an_item_it_trained_on(fm_embeddings) -> None:  # type: ignore[no-untyped-def]
    x, y = fm_embeddings
    small = np.concatenate([np.flatnonzero(y == c)[:6] for c in (0, 1, 7)])
    v = validate(x[small], np.searchsorted([0, 1, 7], y[small]), 3)
    assert v.method == "cross-validation" and v.folds == 5 and v.n == len(small)
    big = validate(x, y, 10)
    assert big.method == "cross-validation" and big.n == 600  # under HOLDOUT_MIN_ITEMS
    acc = float((big.probs.argmax(1) == y[big.indices]).mean())
    assert acc > 0.7  # products embeddings separate Fashion-MNIST classes well


def test_stratified_splits_are_disjoint_and_cover_every_class() -> None:
    y = np.repeat(np.arange(3), [2, 5, 11]).astype(np.int64)
    folds = stratified_folds(y, 2, np.random.default_rng(1))
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(y)))
    for f in folds:
        assert set(y[f].tolist()) == {0, 1, 2}
    train, test = stratified_holdout(y, 0.2, np.random.default_rng(1))
    assert not set(train) & set(test) and set(y[test].tolist()) == {0, 1, 2}


def _noise_with_copies(copies: int, unique: int, dim: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """`unique` random unit vectors with random labels (nothing to learn), each `copies` times:
    the same picture added several times (a zip sent again after a dropped connection)."""
    rng = np.random.default_rng(7)
    x = unit(rng.normal(size=(unique, dim)))
    y = np.tile(np.arange(2), unique // 2)
    order = rng.permutation(unique * copies)
    return np.repeat(x, copies, axis=0)[order], np.repeat(y, copies)[order].astype(np.int64)


@pytest.mark.parametrize(("copies", "unique"), [(2, 1040), (4, 20)])  # hold-out, cross-validation
def test_copies_of_one_picture_are_never_on_both_sides_of_a_split(copies: int, unique: int) -> None:
    x, y = _noise_with_copies(copies, unique)
    v = validate(x, y, 2)
    assert v.method == ("holdout" if unique >= HOLDOUT_MIN_ITEMS else "cross-validation")
    held = x[v.indices]
    if v.method == "holdout":  # no held-out picture has a copy among the training items
        train = np.setdiff1d(np.arange(len(y)), v.indices)
        assert not (held @ x[train].T > 1 - 1e-9).any()
    # Nothing to learn: the honest held-out accuracy is near chance, not the ~1.0 a head
    # scores on copies of what it was fitted on.
    acc = float((v.probs.argmax(1) == y[v.indices]).mean())
    assert acc < 0.75, acc


def test_without_copies_the_split_is_unchanged() -> None:
    x, y = _noise_with_copies(1, 1040)
    v = validate(x, y, 2, seed=3)
    _, test = stratified_holdout(y, 0.2, np.random.default_rng(3))
    assert np.array_equal(v.indices, test)


def test_a_class_with_one_distinct_picture_still_validates() -> None:
    """Copies labelled differently, or a class that is one picture sent twice: the items are
    split as they are (nothing else to hold out), never a crash."""
    x, _ = _noise_with_copies(1, 6)
    xs = np.concatenate([x[:3], x[:3], x[3:4], x[3:4]])  # class 1 copies class 0's pictures
    ys = np.array([0, 0, 0, 1, 1, 1, 2, 2], dtype=np.int64)  # class 2: one picture, twice
    v = validate(xs, ys, 3)
    assert v.method == "cross-validation" and v.n == len(ys)
