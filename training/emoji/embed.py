"""Backbone features of the emoji pictures and real photos, computed once and cached.

Features are the shipped ``models/imagenet`` bundle's outputs through onnxruntime (the same
graph every head here is composed onto): the 1280-d ``embedding`` and the ImageNet probability
mass on the 59 bird classes. Cached as .npz under ``data/emoji-cache`` keyed by the bundle's
sha256, the style, the view (``base`` or an augmentation seed) and RENDER_VERSION.

CLI: ``python -m training.emoji.embed [--aug-copies 1]`` fills the cache (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.bundle import load_bundle
from app.imaging import ImageLimits, prepare
from training.emoji.catalog import PROJECT_ROOT, STYLES, Picture, data_root, load_catalog
from training.emoji.render import augment, base_array, style_view
from training.imagenet import BIRD_INDICES, bird_photos
from training.serving_eval import open_model

logger = logging.getLogger(__name__)

# Bump when rendering or augmentation changes: cached features are then recomputed.
RENDER_VERSION = 1
SIZE = 224
# Percent of the non-positive pictures that also get augmented views (compute on 2 CPU cores).
AUG_SHARE = 35
BACKBONE = PROJECT_ROOT / "models" / "imagenet"


@dataclass(frozen=True)
class Features:
    emb: npt.NDArray[np.float32]  # N x 1280
    bird_mass: npt.NDArray[np.float32]  # N
    paths: tuple[str, ...]  # picture files, relative to the data root


class Backbone:
    """The imagenet bundle's graph in the server's runtime: RGB 224 float batch -> features."""

    def __init__(self, bundle_dir: Path = BACKBONE, threads: int = 2) -> None:
        self.bundle = load_bundle(bundle_dir)
        self.model = open_model(self.bundle, threads=threads)
        self.sha = self.bundle.metadata.artifact.sha256
        self._bird = np.asarray(BIRD_INDICES)

    def __call__(self, batch: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray]:
        out = self.model.run(np.ascontiguousarray(batch, dtype=np.float32))
        if out.embedding is None:
            raise ValueError(f"{self.bundle.name} has no embedding output")
        mass = out.probs[:, self._bird].sum(axis=1)
        return out.embedding.astype(np.float32), mass.astype(np.float32)


def _run(
    backbone: Backbone, arrays: Callable[[int], npt.NDArray[np.uint8]], n: int, batch: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    embs, masses = [], []
    for start in range(0, n, batch):
        x = np.stack([arrays(i) for i in range(start, min(n, start + batch))]).astype(np.float32)
        e, m = backbone(x)
        embs.append(e)
        masses.append(m)
    dim = backbone.bundle.metadata.outputs.embedding
    width = dim.dim if dim is not None else 0
    if not embs:
        return np.zeros((0, width), np.float32), np.zeros(0, np.float32)
    return np.concatenate(embs), np.concatenate(masses)


def cache_dir(root: Path | None = None) -> Path:
    return (root or data_root()) / "emoji-cache"


def _cache_file(root: Path | None, backbone_sha: str, style: str, view: str) -> Path:
    return cache_dir(root) / f"r{RENDER_VERSION}-{backbone_sha[:12]}" / f"{style}-{view}.npz"


def style_features(
    pictures: Sequence[Picture],
    style: str,
    view: str,
    backbone: Backbone,
    root: Path | None = None,
    seeds: Sequence[int] | None = None,
) -> Features:
    """Features of one style's pictures; view 'base' (on white), 'aug<k>'/'all<k>' (augmented)
    or 'sty<k>' (redrawn as line art or a silhouette: render.style_view). Picture i's random
    view is seeded by seeds[i], default i: pass each picture's index in the style's full list so
    a subset gets the same views as the whole."""
    path = _cache_file(root, backbone.sha, style, view)
    base = root or data_root()
    rel = tuple(str(p.path.relative_to(base)) for p in pictures)
    if path.is_file():
        z = np.load(path)
        row = {p: i for i, p in enumerate(z["paths"].tolist())}
        if all(p in row for p in rel):  # the same pictures, or a subset of the cached ones
            idx = np.array([row[p] for p in rel], np.int64)
            return Features(z["emb"][idx], z["bird_mass"][idx], rel)
    t0 = time.perf_counter()
    if view == "base":

        def arrays(i: int) -> npt.NDArray[np.uint8]:
            return base_array(pictures[i], SIZE)
    else:
        seed = view_seed(view)
        style_no = list(STYLES).index(style)
        draw = style_view if view.startswith("sty") else augment

        def arrays(i: int) -> npt.NDArray[np.uint8]:
            rng = np.random.default_rng([seed, style_no, seeds[i] if seeds is not None else i])
            return draw(pictures[i], SIZE, rng)

    emb, mass = _run(backbone, arrays, len(pictures))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, emb=emb, bird_mass=mass, paths=np.asarray(rel))
    tmp.replace(path)
    logger.info(
        "%s %s: %d pictures in %.0f s", style, view, len(pictures), time.perf_counter() - t0
    )
    return Features(emb, mass, rel)


def photo_features(backbone: Backbone) -> tuple[Features, npt.NDArray[np.int64], list[str]]:
    """The labelled real photos (training.imagenet.bird_photos) through the server's ingestion."""
    photos = bird_photos()
    spec = backbone.bundle.metadata.input
    arrays = [prepare(p.path.read_bytes(), spec, ImageLimits()).array for p in photos]
    emb, mass = backbone(np.stack(arrays))
    y = np.array([int(p.is_bird) for p in photos], np.int64)
    return Features(emb, mass, tuple(str(p.path) for p in photos)), y, [p.group for p in photos]


def view_seed(view: str) -> int:
    """The augmentation seed of a view: 'aug<k>' -> k, 'all<k>' -> 100 + k, 'sty<k>' -> 200 + k
    (kinds never share a seed, so a picture's views of different kinds differ)."""
    if view.startswith("all"):
        return 100 + int(view.removeprefix("all"))
    if view.startswith("sty"):
        return 200 + int(view.removeprefix("sty"))
    return int(view.removeprefix("aug"))


def aug_subset(pictures: Sequence[Picture], view: str) -> list[int]:
    """Indices of the pictures that get augmented view `view`: every Santa and bird, and for
    'aug0' also a fixed AUG_SHARE percent of the rest (by a hash of the file name: the same
    emoji in every run); 'aug1', 'aug2', ... are extra views of the rare positives only, and
    'aug1' also of Santa's hardest negatives (the other fantasy figures). 'all<k>': one view of
    every picture (the emoji-identity heads, which learn every emoji, not only the positives);
    'sty<k>': one style view (line art or silhouette) of every picture."""
    if view.startswith(("all", "sty")):
        return list(range(len(pictures)))
    share = AUG_SHARE if view == "aug0" else 0
    return [
        i
        for i, p in enumerate(pictures)
        if p.is_santa
        or p.bird_label == 1
        or (view == "aug1" and p.subcategory == "person-fantasy")
        or zlib.crc32(p.path.name.encode()) % 100 < share
    ]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--styles", nargs="*", default=list(STYLES))
    ap.add_argument(
        "--aug-copies", type=int, default=5, help="augmented views (aug0 + extra positive views)"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    backbone = Backbone(threads=args.threads)
    catalog = load_catalog(styles=args.styles)
    for style in args.styles:
        pics = [p for p in catalog if p.style == style]
        style_features(pics, style, "base", backbone)
        for k in range(args.aug_copies):
            idx = aug_subset(pics, f"aug{k}")
            style_features([pics[i] for i in idx], style, f"aug{k}", backbone, seeds=idx)


if __name__ == "__main__":
    main()
