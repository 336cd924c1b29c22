"""The on-disk cache of backbone embeddings for transfer learning, keyed by each file's sha256
(so renames and re-runs cost nothing).

Images are read by training.data.load_images (the server's own ingestion): training sees what
serving sees; folders are listed and split by training.data as well.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt

from app.bundle import InputSpec
from training.data import file_sha256, load_images


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
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], EmbedStats]:
    """Embeddings of `paths` (left-right mirrored when `flip`), from the cache where possible,
    and the indices of the paths they belong to (unreadable files are skipped, as by
    training.data.load_images)."""
    view = "flip" if flip else "orig"
    keys = [f"{file_sha256(p)}:{view}" for p in paths]
    missing = sorted(
        {k: p for k, p in zip(keys, paths, strict=True) if k not in cache.entries}.items()
    )
    computed = 0
    if missing:
        x, ok = load_images([p for _, p in missing], spec)
        if flip:
            x = np.ascontiguousarray(x[:, :, ::-1, :])
        if len(x):
            emb = backbone.predict(x, batch_size=batch_size, verbose=0)
            for i, e in zip(ok, emb, strict=True):
                cache.entries[missing[int(i)][0]] = np.asarray(e, dtype=np.float32)
            cache.dirty = True
        computed = len(ok)
    kept = np.asarray([i for i, k in enumerate(keys) if k in cache.entries], dtype=np.int64)
    stats = EmbedStats(computed=computed, cached=len(kept) - computed)
    dim = int(backbone.output.shape[-1])
    out = (
        np.stack([cache.entries[keys[i]] for i in kept])
        if len(kept)
        else np.zeros((0, dim), np.float32)
    )
    return out, kept, stats
