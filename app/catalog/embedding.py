"""Embedding with a served model for catalogs: the embedding space its vectors live in
(`model_ref`, which a catalog is bound to) and unit embedding rows of prepared images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.catalog.types import ModelRef, Vector, unit_rows
from app.errors import InvalidRequest
from app.imaging import ImageLimits, PreparedImage
from app.ingest import OnDecoded, prepare_batch
from app.loaded import LoadedModel

_EMBED_BATCH = 64
Marked = tuple[Vector, list[int]]  # unit embedding rows, and the positions of blank pictures
Seen = OnDecoded | None  # prepare_batch's on_decoded, when wanted


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


def embed_images(
    loaded: LoadedModel, images: Sequence[bytes], limits: ImageLimits, seen: Seen
) -> Marked:
    """Unit embedding rows of `images` decoded per the model's bundle (`seen`: prepare_batch's
    on_decoded), and the positions of the blank ones (ImageInfo.blank, from that decode: one
    flat colour as the model sees it, which predict flags too). 413/415/422."""
    prepared = prepare_batch(images, loaded.model.bundle.metadata.input, limits, on_decoded=seen)
    return embed_prepared(loaded, prepared), [i for i, p in enumerate(prepared) if p.info.blank]
