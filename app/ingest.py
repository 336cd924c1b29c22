"""One ingestion path for a batch of uploads (predict, catalogs, search, thumbnails):
settings -> limits, bytes -> prepared model inputs under one per-request decode budget,
errors naming the offending image. No HTTP."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from app.bundle import InputSpec, ResizeSpec
from app.cores import cores_per_worker
from app.decode_guard import DecodeBudget
from app.errors import ServiceError
from app.imaging import ImageInfo, ImageLimits, PreparedImage, check_request, decode, prepare
from app.settings import Settings


def limits_from(settings: Settings) -> ImageLimits:
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        max_avif_pixels=settings.max_avif_pixels,
        min_side=settings.min_image_side,
        max_request_pixels=settings.max_request_pixels,
        decode_seconds=settings.decode_time_budget_s,
        max_jpeg_scans=settings.max_jpeg_scans,
        # 0 = one decode at a time per core of this worker's share of the machine
        decode_concurrency=settings.decode_concurrency or cores_per_worker(settings.workers),
    )


def _name_image(exc: ServiceError, i: int, n: int, filenames: Sequence[str | None] | None) -> None:
    if n > 1:
        name = filenames[i] if filenames else None
        exc.detail = f"image {i + 1}" + (f" ({name!r})" if name else "") + f": {exc.detail}"
        exc.extra["image_index"] = i


def prepare_batch(
    images: Sequence[bytes],
    spec: InputSpec,
    limits: ImageLimits,
    filenames: Sequence[str | None] | None = None,
    budget: DecodeBudget | None = None,
    still_wanted: Callable[[], None] | None = None,
) -> list[PreparedImage]:
    """Decode and prepare every image under one decode budget for the whole request; an
    error names the offending image when there are several (`image_index` added).
    `still_wanted()` runs before each image and raises once the answer is no longer wanted
    (the request's deadline passed, its client left)."""
    if len(images) > 1:  # an over-budget batch is refused from its headers, before decoding
        check_request(images, spec, limits)
    budget = budget if budget is not None else limits.budget()
    prepared: list[PreparedImage] = []
    for i, data in enumerate(images):
        if still_wanted is not None:
            still_wanted()
        try:
            prepared.append(prepare(data, spec, limits, budget))
        except ServiceError as exc:
            _name_image(exc, i, len(images), filenames)
            raise
    return prepared


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    info: ImageInfo  # format and stored size of the original


def thumbnails(
    images: Sequence[bytes],
    limits: ImageLimits,
    size: int,
    budget: DecodeBudget | None = None,
) -> list[Thumbnail]:
    """JPEG thumbnails (upright, alpha on white, longest side <= size, never upscaled) through
    the decode the model inputs go through: the same format rules, 16-bit and alpha maths, pixel
    and time budget and decode slots, in colour whatever the model's colour space.

    A second decode rather than the model's: the model's is reduced to 1-2x its input (28-56
    px for a 28 px model) and converted to its colour space, too small or gray for a thumbnail,
    and deriving the model input from a thumbnail-sized decode would make catalog embeddings
    differ from predict's for the same bytes."""
    # decode keeps both sides >= the spec's side (a large JPEG's DCT scale), then box-reduces
    # to no less than twice it: never below the thumbnail. Letterboxed, as a thumbnail is: a
    # thin giant is reduced by its long side (app.reduction) instead of decoded at full size
    # (a 100x400,000 RGBA PNG with an orientation took the tree to 880 MiB, round 36's attack).
    thumb_spec = InputSpec(
        width=size, height=size, channels=3, color="rgb", resize=ResizeSpec(mode="letterbox")
    )
    if len(images) > 1:
        check_request(images, thumb_spec, limits)
    budget = budget if budget is not None else limits.budget()
    out: list[Thumbnail] = []
    for i, data in enumerate(images):
        try:
            img, info = decode(data, thumb_spec, limits, budget)
        except ServiceError as exc:
            _name_image(exc, i, len(images), None)
            raise
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85, optimize=True)
        out.append(Thumbnail(jpeg=buf.getvalue(), info=info))
    return out
