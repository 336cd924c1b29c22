"""Embedding with a served model for catalogs: the embedding space its vectors live in
(`model_ref`, which a catalog is bound to) and unit embedding rows of prepared images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.catalog.types import ModelRef, Vector, unit_rows
from app.errors import InvalidRequest
from app.imaging import PreparedImage
from app.loaded import LoadedModel

_EMBED_BATCH = 64


def model_ref(loaded: LoadedModel) -> ModelRef:
    """The embedding space a model's vectors live in: a taught model shares its backbone's."""
    meta = loaded.model.bundle.metadata
    if meta.backbone is not None:
        bb = meta.backbone
        return ModelRef(name=bb.name, version=bb.version, sha256=bb.sha256, dim=bb.dim)
    emb = meta.outputs.embedding
    if emb is None:
        raise InvalidRequest(
            f"Model {meta.name!r} has no embedding output, so it cannot back a catalog."
        )
    return ModelRef(name=meta.name, version=meta.version, sha256=meta.artifact.sha256, dim=emb.dim)


def embed_prepared(loaded: LoadedModel, prepared: Sequence[PreparedImage]) -> Vector:
    """Unit embedding rows of images already decoded per the model's bundle, in forward passes
    of at most _EMBED_BATCH images. 422 when the model has no embedding output."""
    model_ref(loaded)  # 422 when the model has no embedding
    rows: list[Vector] = []
    for start in range(0, len(prepared), _EMBED_BATCH):
        chunk = prepared[start : start + _EMBED_BATCH]
        batch = np.stack([p.array for p in chunk]).astype(np.float32, copy=False)
        out = loaded.model.run(batch)
        assert out.embedding is not None
        rows.append(out.embedding)
    return unit_rows(np.concatenate(rows))
