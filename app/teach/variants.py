"""Near-twins among a teach job's examples: variants of one picture (one emoji in six skin
tones, shots of a burst, a photo re-encoded or resized) filed as separate items. They are not
copies, so a split over items puts twins on both sides and the held-out figure counts a twin of
a taught picture as a new one (docs/teach.md, "How the head is trained").

An item has a near-twin when another item of its class, not a copy of it (familiar.COPY) and
not of its own `metadata.group`, is at least TWIN alike (cosine of unit embeddings) and APART
times nearer (in 1 - cosine) than the item's nearest item of another class. The job warns when
at least SHARE of the items have one. Measured by bench/teach_variants.py (2026-12-07; the
served `imagenet` backbone, pictures through the server's ingestion): items with a twin, as
the rule counts them, 0.91 / 0.86 of 310 Twemoji / Noto emoji in six skin tones (1,860 each,
class = subcategory) and 12 / 10 of the 14 pictures of the docs' Santa example; 0.05 of 313
default-tone emoji of 8 subcategories (either style), 0.17 / 0.20 of every default-tone emoji
(1,906; the twins are real variants: man / woman / person versions of one gesture, mirrored
runners, flags), none of the project's 73 photos, 0.03 of sklearn's 1,797 digits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from app.teach.examples import Examples
from app.teach.familiar import CHUNK, MAX_QUERIES, other_sims
from app.teach.head import F64, I64

# Cosine at or above which another item of the class can be a near-twin, per backbone (the
# catalog's model): a property of its embedding, set where it was measured. Skin-tone variant
# pairs are 0.62-1.00 (median 0.94, 4,650 pairs per style), different emoji median 0.53 (99th
# percentile 0.81); a photo (>= 64 px) re-encoded as JPEG q60 or halved 0.97 of 33 at >= 0.9
# (a 32 px thumbnail changes more: 1 of 40). Not `products` (Fashion-MNIST, 256-d): distinct
# test images of one class are as alike as an image and itself with +-6 grey levels of noise
# (nearest same-class >= 0.995 for 29% of 2,000; the noisy copies median 0.997).
TWIN: Final = {"imagenet": 0.9}
# A class of distinct pictures the backbone sees as alike is not variants: 88% of the digits
# have a same-class neighbour at >= 0.9, yet one of another class is nearly as near; 3x nearer
# leaves 3% (2x: 17%, 4x: 1%; the skin-tone catalogs 0.91 / 0.86 at 3x, 0.81 / 0.79 at 4x).
APART: Final = 3.0
SHARE: Final = 0.25  # of the items: above the 0.20 of every default-tone emoji


@dataclass(frozen=True)
class Twins:
    items: int  # items with a near-twin among those looked at
    of: int  # items looked at: every item, or a random MAX_QUERIES of them
    n: int  # items taught
    pair: tuple[int, int] | None  # one item and its twin (row numbers)


def near_twins(x: F64, y: I64, twin_at: float, groups: I64 | None = None, seed: int = 0) -> Twins:
    """Items (every one, or a random MAX_QUERIES, each compared with every item: at most
    MAX_QUERIES x n products, as familiar.py's floor) whose nearest other item of their class,
    not a copy nor of their group, is at least `twin_at` alike and APART times nearer (in
    1 - cosine) than their nearest item of another class."""
    n = len(x)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, MAX_QUERIES), replace=False))
    found, pair = 0, None
    for start in range(0, len(sample), CHUNK):
        rows = sample[start : start + CHUNK]
        sims = other_sims(x, rows, groups)
        same = y[rows][:, None] == y[None, :]
        other = np.where(same, -np.inf, sims).max(axis=1)
        sims[~same] = -np.inf
        nearest = sims.argmax(axis=1)
        s = sims[np.arange(len(rows)), nearest]
        twin = (s >= twin_at) & (APART * (1 - s) <= 1 - other)
        found += int(twin.sum())
        if pair is None and twin.any():
            i = int(np.argmax(twin))
            pair = (int(rows[i]), int(nearest[i]))
    return Twins(items=found, of=len(sample), n=n, pair=pair)


def variants_caveat(ex: Examples) -> list[str]:
    """One warning when at least SHARE of the items have a near-twin; nothing for a backbone
    without a measured threshold (TWIN)."""
    twin_at = TWIN.get(ex.backbone or "")
    if twin_at is None or len(ex.y) < 2:
        return []
    twins = near_twins(ex.x, ex.y, twin_at, ex.groups)
    if twins.items < SHARE * twins.of or twins.pair is None:
        return []
    a, b = twins.pair
    label = ex.labels[ex.y[a]]
    example = f"{ex.names[a]!r} and {ex.names[b]!r}" if ex.names else "two items"
    count = (
        f"{twins.items} of {twins.n} items"
        if twins.of == twins.n
        else f"about {round(twins.items * twins.n / twins.of):,} of {twins.n:,} items "
        f"({twins.items} of {twins.of} sampled)"
    )
    return [
        f"{count} have a near-twin (another item of their class, not a copy, at cosine "
        f"{twin_at} or more and far nearer than any item of another class), e.g. {example} of "
        f"{label!r}; give variants one metadata.group (see docs/teach.md), or teach more "
        "distinct pictures; the held-out figure counts them as new pictures"
    ]
