"""The floor of a taught model's familiarity (app/teach/familiar.py) on known geometry."""

from __future__ import annotations

import numpy as np

from app.teach import familiar
from app.teach.familiar import MIN_EXAMPLES, familiar_floor, nearest_other, unit_rows


def clusters(rng: np.random.Generator, n: int, centres: np.ndarray, spread: float) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    return centres[picks] + spread * rng.standard_normal((n, centres.shape[1]))


def test_nearest_other_is_the_brute_force_answer_in_every_chunk(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(familiar, "CHUNK", 7)  # several chunks and a ragged last one
    rng = np.random.default_rng(1)
    x = unit_rows(rng.standard_normal((40, 5)))
    queries = np.array([0, 3, 9, 10, 22, 39])
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_allclose(nearest_other(x, queries), sims[queries].max(axis=1), rtol=1e-6)


def test_about_one_in_a_hundred_like_the_examples_is_below_the_floor() -> None:
    rng = np.random.default_rng(2)
    centres = 3 * rng.standard_normal((4, 32))
    examples = clusters(rng, 1500, centres, 1.0)
    floor = familiar_floor(examples)
    assert floor is not None and 0 < floor < 1
    fresh = unit_rows(clusters(rng, 3000, centres, 1.0))
    near = (fresh @ unit_rows(examples).T).max(axis=1)
    assert 0.002 < (near < floor).mean() < 0.03  # FLOOR_QUANTILE = 1%, by construction
    elsewhere = unit_rows(clusters(rng, 500, 3 * rng.standard_normal((4, 32)), 1.0))
    assert ((elsewhere @ unit_rows(examples).T).max(axis=1) < floor).mean() > 0.9


def test_copies_of_an_example_are_not_its_neighbours() -> None:
    """Round 27: every example sent twice made each one's nearest other example its copy, the
    floor 1.0 and every new picture `familiar: false`."""
    rng = np.random.default_rng(4)
    examples = clusters(rng, 400, 3 * rng.standard_normal((4, 32)), 1.0)
    once = familiar_floor(examples)
    twice = familiar_floor(np.concatenate([examples, examples]))
    assert once is not None and twice is not None
    assert abs(twice - once) < 0.05 and twice < 0.99
    assert familiar_floor(np.repeat(examples[:20], 3, axis=0)) is not None
    assert familiar_floor(np.repeat(examples[:1], 30, axis=0)) is None  # one picture, 30 times


def test_too_few_examples_give_no_floor_and_the_sample_is_seeded() -> None:
    rng = np.random.default_rng(3)
    assert familiar_floor(rng.standard_normal((MIN_EXAMPLES - 1, 8))) is None
    x = rng.standard_normal((3000, 8))  # over MAX_QUERIES: a drawn sample
    assert familiar_floor(x, seed=5) == familiar_floor(x, seed=5)


def test_variants_kept_in_a_group_are_not_each_others_neighbours() -> None:
    """Round 31: six skin tones of each emoji made each example's nearest other example its
    own variant, the floor 0.91, and 15 of 29 new emoji of the taught classes `familiar:
    false`. With their `metadata.group`, an example's neighbours are other groups' examples,
    as a new picture's are: about 1% of new pictures like the examples fall below again."""
    rng = np.random.default_rng(5)
    centres = 3 * rng.standard_normal((4, 32))
    pictures = clusters(rng, 300, centres, 1.0)
    variants = np.repeat(pictures, 6, axis=0) + 0.05 * rng.standard_normal((1800, 32))
    groups = np.repeat(np.arange(300), 6)
    fresh = unit_rows(clusters(rng, 3000, centres, 1.0))
    near = (fresh @ unit_rows(variants).T).max(axis=1)
    ungrouped = familiar_floor(variants)
    grouped = familiar_floor(variants, groups=groups)
    assert ungrouped is not None and grouped is not None
    assert (near < ungrouped).mean() > 0.5  # most new pictures flagged
    assert 0.002 < (near < grouped).mean() < 0.03
