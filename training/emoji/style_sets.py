"""The labelled features leave-one-style-out works on: one StyleSet per drawing style (the
pictures as drawn plus augmented views) and the labelled real photos, loaded for a task from
the embedding caches (training.emoji.embed), and projected by a projection fitted on training
styles only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from training.emoji.catalog import STYLES, Picture, load_catalog
from training.emoji.embed import (
    Backbone,
    Features,
    aug_subset,
    photo_features,
    style_features,
)
from training.emoji.heads import Projection, features, fit_projection
from training.emoji.tasks import Task


@dataclass
class StyleSet:
    style: str
    pictures: list[Picture]
    y: npt.NDArray[np.int64]
    x_base: npt.NDArray[np.float32]
    # Augmented views: (features, labels) of a subset of the pictures (embed.aug_subset).
    aug: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]] = field(default_factory=list)
    mass: npt.NDArray[np.float32] | None = None  # ImageNet bird mass of the base pictures
    hard: npt.NDArray[np.bool_] | None = None  # the task's hard negatives among the base pictures
    # Emoji keys (training.emoji.identity's classes) of the base pictures and of each aug view.
    keys: npt.NDArray[np.str_] | None = None
    aug_keys: list[npt.NDArray[np.str_]] = field(default_factory=list)


@dataclass(frozen=True)
class PhotoSet:
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    groups: list[str]
    paths: tuple[str, ...]
    mass: npt.NDArray[np.float32] | None = None


def _keep(feat: Features, mask: npt.NDArray[np.bool_], use_mass: bool) -> npt.NDArray[np.float32]:
    return features(feat.emb[mask], feat.bird_mass[mask], use_mass)


def load_sets(
    task: Task, backbone: Backbone, views: Sequence[str] = ("aug0",), styles: Sequence[str] = ()
) -> dict[str, StyleSet]:
    """The task's labelled features for each style (pictures whose label is None dropped)."""
    wanted = list(styles) or list(STYLES)
    catalog = load_catalog(styles=wanted)
    out = {}
    for style in wanted:
        pics = [p for p in catalog if p.style == style]
        labels = [task.label(p) for p in pics]
        mask = np.array([lab is not None for lab in labels])
        base = style_features(pics, style, "base", backbone)
        aug, aug_keys = [], []
        for v in views:
            idx = [i for i in aug_subset(pics, v) if mask[i]]
            sub = [pics[i] for i in idx]
            y_sub = np.array([labels[i] for i in idx], np.int64)
            f = style_features(sub, style, v, backbone, seeds=idx)
            aug.append((features(f.emb, f.bird_mass, task.use_mass), y_sub))
            aug_keys.append(np.asarray([p.key for p in sub]))
        kept = [p for p, m in zip(pics, mask, strict=True) if m]
        hard = None if task.hard is None else np.array([task.hard(p) for p in kept], bool)
        out[style] = StyleSet(
            style,
            kept,
            np.array([lab for lab in labels if lab is not None], np.int64),
            _keep(base, mask, task.use_mass),
            aug,
            base.bird_mass[mask],
            hard,
            np.asarray([p.key for p in kept]),
            aug_keys,
        )
    return out


def load_photos(task: Task, backbone: Backbone) -> PhotoSet:
    feat, y, groups = photo_features(backbone)
    x = features(feat.emb, feat.bird_mass, task.use_mass)
    return PhotoSet(x, y, groups, feat.paths, feat.bird_mass)


def project(
    sets: dict[str, StyleSet], photos: PhotoSet | None, proj: Projection
) -> tuple[dict[str, StyleSet], PhotoSet | None]:
    """Every set's features through `proj` (fitted on training styles only)."""
    out = {
        k: StyleSet(
            s.style,
            s.pictures,
            s.y,
            proj(s.x_base),
            [(proj(x), y) for x, y in s.aug],
            s.mass,
            s.hard,
            s.keys,
            s.aug_keys,
        )
        for k, s in sets.items()
    }
    if photos is None:
        return out, None
    return out, PhotoSet(proj(photos.x), photos.y, photos.groups, photos.paths, photos.mass)


def projection_for(
    sets: dict[str, StyleSet], styles: Sequence[str], photos: PhotoSet | None
) -> Projection:
    rows = [sets[s].x_base for s in styles] + ([photos.x] if photos is not None else [])
    return fit_projection(np.concatenate(rows))
