"""Image folders for transfer learning: class subfolders, stratified splits, and the on-disk
cache of backbone embeddings keyed by each file's sha256 (so renames and re-runs cost nothing).

Images are read through the server's own ingestion (app.imaging): training sees what serving sees.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt

from app.bundle import InputSpec
from app.imaging import ImageLimits, prepare

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def scan_folder(
    root: Path, limit_per_class: int | None = None
) -> tuple[tuple[str, ...], list[list[Path]]]:
    """Class names (sorted subfolder names) and their image files."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder; expected one subfolder per class, e.g. {root}/santa/*.jpg "
            f"and {root}/not_santa/*.jpg"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [
        sorted(
            p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        for c in classes
    ]
    if limit_per_class is not None:
        files = [f[:limit_per_class] for f in files]
    too_few = [c for c, f in zip(classes, files, strict=True) if len(f) < 3]
    if len(classes) < 2 or too_few:
        raise ValueError(
            f"{root}: need at least 2 class subfolders with at least 3 images each "
            f"(found classes {classes}; too few images in {too_few})"
        )
    return tuple(classes), files


def stratified_split(
    files: Sequence[Sequence[Path]], val_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, list[Path]], dict[str, npt.NDArray[np.int64]]]:
    """Per class: shuffle, then at least one test image, one validation image where the class
    has >= 4 images and val_fraction > 0, the rest training."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for label, group in enumerate(files):
        order = rng.permutation(len(group))
        n = len(group)
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n - n_test >= 3 else 0
        for rank, i in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out[split].append((group[i], label))
    paths = {k: [p for p, _ in v] for k, v in out.items()}
    labels = {k: np.array([y for _, y in v], dtype=np.int64) for k, v in out.items()}
    return paths, labels


def load_images(paths: Sequence[Path], spec: InputSpec) -> npt.NDArray[np.float32]:
    limits = ImageLimits()
    arrays = [prepare(p.read_bytes(), spec, limits).array for p in paths]
    shape = (0, spec.height, spec.width, spec.channels)
    return np.stack(arrays) if arrays else np.zeros(shape, np.float32)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class EmbeddingCache:
    """Embeddings on disk, one .npz per backbone+preprocessing, keyed by '<file sha256>:<view>'."""

    path: Path
    entries: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def open(cls, cache_dir: Path, backbone_key: str) -> EmbeddingCache:
        path = cache_dir / f"{backbone_key[:24]}.npz"
        cache = cls(path)
        if path.is_file():
            with np.load(path) as z:
                cache.entries = dict(zip(z["keys"].tolist(), z["embeddings"], strict=True))
        return cache

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.entries)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, keys=np.array(keys), embeddings=np.stack([self.entries[k] for k in keys]))
        os.replace(tmp, self.path)
        self.dirty = False


@dataclass(frozen=True)
class EmbedStats:
    computed: int
    cached: int


def embed_files(
    backbone: keras.Model,
    paths: Sequence[Path],
    spec: InputSpec,
    cache: EmbeddingCache,
    flip: bool = False,
    batch_size: int = 16,
) -> tuple[npt.NDArray[np.float32], EmbedStats]:
    """Embeddings of `paths` (left-right mirrored when `flip`), from the cache where possible."""
    view = "flip" if flip else "orig"
    keys = [f"{_sha256(p)}:{view}" for p in paths]
    missing = sorted(
        {k: p for k, p in zip(keys, paths, strict=True) if k not in cache.entries}.items()
    )
    if missing:
        x = load_images([p for _, p in missing], spec)
        if flip:
            x = np.ascontiguousarray(x[:, :, ::-1, :])
        emb = backbone.predict(x, batch_size=batch_size, verbose=0)
        for (k, _), e in zip(missing, emb, strict=True):
            cache.entries[k] = np.asarray(e, dtype=np.float32)
        cache.dirty = True
    stats = EmbedStats(computed=len(missing), cached=len(paths) - len(missing))
    dim = int(backbone.output.shape[-1])
    out = np.stack([cache.entries[k] for k in keys]) if keys else np.zeros((0, dim), np.float32)
    return out, stats
