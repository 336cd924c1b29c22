"""One ingestion path for a batch of uploads (predict, catalogs, search, thumbnails):
settings -> limits, bytes -> prepared model inputs under one per-request decode budget,
errors naming the offending image. No HTTP."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from PIL import Image

from app.bundle import InputSpec, ResizeSpec
from app.cores import cores_per_worker
from app.decode_guard import DecodeBudget
from app.errors import ServiceError, batch_position
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
        exc.detail = f"{batch_position(i, name)}: {exc.detail}"
        exc.extra["image_index"] = i


OnDecoded = Callable[[int, Image.Image, ImageInfo], None]


def prepare_batch(
    images: Sequence[bytes],
    spec: InputSpec,
    limits: ImageLimits,
    filenames: Sequence[str | None] | None = None,
    budget: DecodeBudget | None = None,
    still_wanted: Callable[[], None] | None = None,
    on_decoded: OnDecoded | None = None,
) -> list[PreparedImage]:
    """Decode and prepare every image under one decode budget for the whole request; an
    error names the offending image when there are several (`image_index` added).
    `still_wanted()` runs before each image and raises once the answer is no longer wanted
    (the request's deadline passed, its client left). `on_decoded(i, picture, info)`: see
    imaging.prepare."""
    if len(images) > 1:  # an over-budget batch is refused from its headers, before decoding
        check_request(images, spec, limits)
    budget = budget if budget is not None else limits.budget()
    prepared: list[PreparedImage] = []
    for i, data in enumerate(images):
        if still_wanted is not None:
            still_wanted()
        try:
            seen = None if on_decoded is None else partial(on_decoded, i)
            prepared.append(prepare(data, spec, limits, budget, seen))
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
    ready: Sequence[Thumbnail | None] = (),
) -> list[Thumbnail]:
    """JPEG thumbnails (upright, alpha on white, longest side <= size, never upscaled) through
    the decode the model inputs go through: the same format rules, 16-bit and alpha maths, pixel
    and time budget and decode slots, in colour whatever the model's colour space. `ready[i]`,
    when given, is image i's thumbnail already made (`thumbnail_from_decode`).

    A second decode rather than the model's where that cannot serve: a gray model's is reduced
    to 1-2x its input (28-56 px for a 28 px model) and gray, and deriving the model input from a
    thumbnail-sized decode would make catalog embeddings differ from predict's for the same
    bytes."""
    # decode keeps both sides >= the spec's side (a large JPEG's DCT scale), then box-reduces
    # to no less than twice it: never below the thumbnail. Letterboxed, as a thumbnail is: a
    # thin giant is reduced by its long side (app.reduction) instead of decoded at full size
    # (a 100x400,000 RGBA PNG with an orientation took the tree to 880 MiB, round 36's attack).
    thumb_spec = InputSpec(
        width=size, height=size, channels=3, color="rgb", resize=ResizeSpec(mode="letterbox")
    )
    todo = [i for i in range(len(images)) if i >= len(ready) or ready[i] is None]
    if len(todo) > 1:
        check_request([images[i] for i in todo], thumb_spec, limits)
    budget = budget if budget is not None else limits.budget()
    out: list[Thumbnail] = []
    for i, data in enumerate(images):
        made = ready[i] if i < len(ready) else None
        if made is not None:
            out.append(made)
            continue
        try:
            img, info = decode(data, thumb_spec, limits, budget)
        except ServiceError as exc:
            _name_image(exc, i, len(images), None)
            raise
        out.append(Thumbnail(jpeg=_jpeg(img, size), info=info))
    return out


def _jpeg(img: Image.Image, size: int) -> bytes:
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, optimize=True)
    return buf.getvalue()


def thumbnail_from_decode(img: Image.Image, info: ImageInfo, size: int) -> Thumbnail | None:
    """A thumbnail made from a model's decode of the picture, or None where that cannot serve:
    not in colour (a gray model's), smaller than the thumbnail would be, or not the whole
    picture (a thin one cropped to what a centre crop sees). A 40 MP 16-bit RGBA PNG added to
    a catalog was decoded twice, 3.5-4.9 s (round 36-37 attacks)."""
    w, h = (
        (info.height, info.width) if info.orientation in (5, 6, 7, 8) else (info.width, info.height)
    )
    iw, ih = img.size
    if img.mode != "RGB" or max(iw, ih) < min(size, max(w, h)):
        return None
    if abs(iw / ih - w / h) > w / h * (0.01 + 2 / min(iw, ih)):  # cropped, not only reduced
        return None
    return Thumbnail(jpeg=_jpeg(img.copy(), size), info=info)


class DecodedThumbnails:
    """Catalog thumbnails made from the model's decode of each picture where it can serve
    (`keep`, prepare_batch's `on_decoded`), the rest by a decode of their own (`finish`)."""

    def __init__(self, n: int, size: int) -> None:
        self.size = size
        self.ready: list[Thumbnail | None] = [None] * n

    def keep(self, i: int, img: Image.Image, info: ImageInfo) -> None:
        self.ready[i] = thumbnail_from_decode(img, info, self.size)

    def finish(self, images: Sequence[bytes], limits: ImageLimits) -> list[Thumbnail]:
        return thumbnails(images, limits, self.size, ready=self.ready)
