"""One ingestion path for a batch of uploads (predict, catalogs, search): settings -> limits,
bytes -> prepared model inputs, errors naming the offending image. No HTTP."""

from __future__ import annotations

from collections.abc import Sequence

from app.bundle import InputSpec
from app.errors import ServiceError
from app.imaging import ImageLimits, PreparedImage, prepare
from app.settings import Settings


def limits_from(settings: Settings) -> ImageLimits:
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        min_side=settings.min_image_side,
    )


def prepare_batch(
    images: Sequence[bytes],
    spec: InputSpec,
    limits: ImageLimits,
    filenames: Sequence[str | None] | None = None,
) -> list[PreparedImage]:
    """Decode and prepare every image; an error names the offending one when there are
    several (detail prefixed, `image_index` added)."""
    prepared: list[PreparedImage] = []
    for i, data in enumerate(images):
        try:
            prepared.append(prepare(data, spec, limits))
        except ServiceError as exc:
            if len(images) > 1:
                name = filenames[i] if filenames else None
                label = f"image {i + 1}" + (f" ({name!r})" if name else "")
                exc.detail = f"{label}: {exc.detail}"
                exc.extra["image_index"] = i
            raise
    return prepared
