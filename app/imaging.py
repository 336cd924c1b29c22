"""Image ingestion, one policy: bytes -> sniffed format -> upright RGB/gray array at model size.

Pillow + numpy only. Every failure is a typed ServiceError (413/415/422), never a crash, and
its message is ours: Pillow's text (heap addresses, internals) goes to the log only. Decoding
is bounded before it starts (app/decode_guard.py) and reduces before it converts
(app/pixels.py); EXIF orientation is read defensively (app/exif.py).
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from app.bundle import InputSpec
from app.colour import profile_for, profile_of, to_srgb
from app.decode_guard import (
    FRAME_COUNT_CAP,
    SLOT_WAIT_S,
    DecodeBudget,
    check_bmp,
    check_png_chunks,
    check_tiff_strips,
    count_gif_frames,
    count_tiff_pages,
    decode_slot,
    jpeg_structure,
    timed,
)
from app.errors import InvalidImage, PayloadTooLarge, ServiceError, UnsupportedMediaType
from app.exif import ExifStatus, applied_by_loader, apply_orientation, read_orientation
from app.formats import ACCEPTED_FORMATS as ACCEPTED_FORMATS
from app.formats import ACCEPTED_TEXT as ACCEPTED_TEXT
from app.formats import avif_refusal, heif_refusal
from app.formats import sniff_format as sniff_format
from app.fsutil import out_of_descriptors
from app.heavy_decode import heavy_slot, whole_cost
from app.image_limits import ImageLimits as ImageLimits
from app.image_limits import kind_of, over_pillows_limit, pixel_limit, too_many_pixels
from app.nclx import nclx_codes
from app.not_image import describe
from app.open_errors import unreadable_header
from app.pixels import flatten, reduce_and_convert
from app.png_bands import MIN_BYTES as BAND_BYTES
from app.polarity import LIGHT_BORDER as LIGHT_BORDER
from app.polarity import border_is_light as border_is_light
from app.polarity import should_invert
from app.reduction import draft_and_cost as draft_and_cost
from app.reduction import reduction
from app.strip_plans import plan
from app.tensorize import blank, seen_box
from app.tensorize import resize as resize
from app.tensorize import to_array as to_array
from app.trim import (
    frame_object,
    ink_on_paper,
    light_ink,
    to_paint,
    trim_and_centre,
    whiten_background,
)

logger = logging.getLogger(__name__)


# A gray picture for an RGB bundle larger than this after reduction (only a thin one is) is
# resized gray and converted at model size: resampling treats R, G and B alike, so the values
# are the same, without a full-size RGB copy (+120 MB for a 400000x100 picture).
_CONVERT_LATER_PIXELS: Final = 1 << 20


@dataclass(frozen=True)
class ImageInfo:
    """What was decoded, reported back to the client."""

    format: str
    width: int
    height: int
    mode: str
    orientation: int  # EXIF orientation value that was applied (1 = none)
    frames: int  # counted up to FRAME_COUNT_CAP; see frames_capped
    decoded_width: int  # size actually decoded (smaller than width/height after a JPEG draft)
    decoded_height: int
    inverted: bool = False  # input.invert, or light ink on dark (trim.light_ink)
    blank: bool = False  # one colour as the model sees it (tensorize.blank)
    exif: ExifStatus = "none"  # none | applied | unreadable | invalid: see app/exif.py
    frames_capped: bool = False  # the file has more frames than were counted


@dataclass(frozen=True)
class PreparedImage:
    array: npt.NDArray[np.float32]  # H x W x C, ready for the model
    info: ImageInfo
    decode_ms: float
    preprocess_ms: float


@dataclass(frozen=True)
class _Facts:
    """Read from the container's structure before Pillow parses anything."""

    scans: int = 0  # JPEG scans (SOS segments), counted up to the cap + 1
    frames: int | None = None  # TIFF pages / GIF frames, counted (None: from Pillow's header)
    one_feed: bool = False  # an arithmetic-coded JPEG: its decoder must get the file in one go
    held: float = 0.0  # a JPEG whose coefficients are all held: its component samples a pixel
    samples: float = 0.0  # a JPEG's component samples a pixel
    lossless: bool = False  # a lossless JPEG: decoded at full size (never drafted)


def _inspect(fmt: str, data: bytes, limits: ImageLimits) -> _Facts:
    """Refuse (413) files whose structure alone would cost too much to parse or decode:
    too many JPEG scans or segments, PNG chunks, GIF metadata blocks."""
    try:
        if fmt == "JPEG":
            jpeg = jpeg_structure(data, limits.max_jpeg_scans)
            scans = jpeg.scans
            if scans > limits.max_jpeg_scans:
                raise PayloadTooLarge(
                    f"The JPEG has more than {limits.max_jpeg_scans} progressive scans "
                    "(ordinary files have about 10); each costs a full decoding pass, so it "
                    "is refused.",
                    limit_jpeg_scans=limits.max_jpeg_scans,
                )
            if jpeg.undecoded:  # Pillow said "damaged" (422) for a file that may be fine
                raise UnsupportedMediaType(
                    f"The file is a {jpeg.undecoded} image, a JPEG coding process not decoded "
                    "here. Send it as PNG or TIFF, or as an ordinary (baseline or progressive) "
                    "JPEG.",
                    accepted=list(ACCEPTED_FORMATS),
                )
            if jpeg.precision not in (0, 8):  # Pillow reads 8-bit JPEGs only
                raise UnsupportedMediaType(
                    f"The JPEG has {jpeg.precision}-bit samples; only 8-bit JPEGs are "
                    "accepted. Send it as an 8-bit JPEG, or as a 16-bit PNG or TIFF.",
                    accepted=list(ACCEPTED_FORMATS),
                )
            held = jpeg.samples if jpeg.buffered else 0.0
            return _Facts(
                scans=scans,
                one_feed=jpeg.arithmetic,
                held=held,
                samples=jpeg.samples,
                lossless=jpeg.lossless,
            )
        if fmt == "PNG":
            check_png_chunks(data)
        elif fmt == "BMP":
            check_bmp(data)
        elif fmt == "TIFF":
            check_tiff_strips(data)
            return _Facts(frames=count_tiff_pages(data, FRAME_COUNT_CAP + 1))
        elif fmt == "GIF":
            return _Facts(frames=max(1, count_gif_frames(data, FRAME_COUNT_CAP + 1)))
        elif fmt == "AVIF" and (refusal := avif_refusal(data, pixel_limit(fmt, limits))):
            raise refusal  # before libavif parses it: the sizes its AV1 data codes
        elif fmt == "HEIF" and (refusal := heif_refusal(data, pixel_limit(fmt, limits))):
            raise refusal  # before libheif parses it: the sizes its HEVC data codes
    except ServiceError:
        raise
    except Exception as exc:  # a walker tripping over bytes Pillow would refuse anyway
        logger.info("%s structure unreadable: %s: %s", fmt, type(exc).__name__, exc)
    return _Facts()


def check_structure(data: bytes, fmt: str, limits: ImageLimits) -> None:
    """`decode`'s checks of a file's structure alone (413/415/422), for a reader that opens
    only its header: Pillow parses a JPEG's segments, a PNG's chunks, a GIF's blocks and an
    AVIF's EXIF orientation one by one as it opens a file."""
    _inspect(fmt, data, limits)


def open_image(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str]:
    """Sniff, check the structure, open (header only) and check dimensions. 413/415/422."""
    img, fmt, _, _ = _open(data, limits)
    return img, fmt


def _open(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str, _Facts, str]:
    """(opened image, format, what its structure showed, its kind: app/image_limits.py)."""
    if not data:
        raise InvalidImage(f"The request contained no image data; send a {ACCEPTED_TEXT} file.")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"The image is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes.",
            limit_bytes=limits.max_bytes,
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(
            f"{describe(data)} Accepted: {ACCEPTED_TEXT}.",
            accepted=list(ACCEPTED_FORMATS),
        )
    facts = _inspect(fmt, data, limits)
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
            if facts.one_feed:
                img.decodermaxblock = max(img.decodermaxblock, len(data))
    except Image.DecompressionBombError as exc:  # said before the size: read it again
        raise over_pillows_limit(fmt, data, limits) from exc
    except Exception as exc:  # Pillow's parsers raise many types on crafted headers
        logger.info("%s header unreadable: %s: %s", fmt, type(exc).__name__, exc)
        raise unreadable_header(fmt, data, exc, ACCEPTED_TEXT) from None
    w, h = img.size
    kind = kind_of(fmt, data, img, facts.held, facts.lossless)
    if w * h > pixel_limit(kind, limits, facts.samples or 1.0):
        raise too_many_pixels(w, h, limits, kind, facts.samples or 1.0)
    if min(w, h) < limits.min_side:
        raise InvalidImage(
            f"The image is {w}x{h} pixels; both sides must be at least {limits.min_side} pixels."
        )
    return img, fmt, facts, kind


_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the picture a quarter
_WHOLE: Final = "TIFF decoded whole"  # one app.tiff_bands cannot split: its own limit


def _decode_failed(fmt: str, exc: BaseException) -> ServiceError:
    busy = out_of_descriptors(exc)  # the server's state (a decoder's module or file), a 503
    if busy is not None:
        return busy
    logger.info("%s decode failed: %s: %s", fmt, type(exc).__name__, exc)
    return InvalidImage(
        f"The {fmt} image is damaged or truncated and could not be decoded. "
        f"Accepted: {ACCEPTED_TEXT}, complete files."
    )


def decode(
    data: bytes,
    spec: InputSpec,
    limits: ImageLimits,
    budget: DecodeBudget | None = None,
    *,
    gray_as_is: bool = False,
    keep_rgb: bool = False,
) -> tuple[Image.Image, ImageInfo]:
    """Decode to an upright 'RGB' or 'L' image in the bundle's colour space, reduced to no
    less than twice the model input (a large JPEG: DCT-scaled to no less than the input).
    `budget` is the request's (a fresh one if omitted).
    `gray_as_is`: a gray picture too large to have been reduced (a thin one) stays 'L' for
    an RGB bundle; the caller converts it after resizing (see `prepare`). `keep_rgb`: a
    colour picture stays 'RGB' for a gray bundle (the caller converts it)."""
    budget = budget if budget is not None else limits.budget()
    with decode_slot(limits.decode_concurrency), timed(budget):
        img, fmt, facts, kind = _open(data, limits)
        width, height = img.size
        mode = img.mode
        # applied to the reduced picture (app.colour); a CMYK one is reduced in CMYK for it
        codes = nclx_codes(data) if fmt == "AVIF" else None
        icc, cmyk = profile_for(mode, profile_of(img.info, codes))
        keep_open = False
        try:
            # PNG (APNG acTL) and WebP (demuxer) give their frame count in a header.
            frames = facts.frames or int(getattr(img, "n_frames", 1))
            rgb = spec.color == "rgb" or keep_rgb
            budget.charge(draft_and_cost(img, fmt, facts.scans, spec, rgb, facts.lossless))
            if img.size[0] * img.size[1] > pixel_limit(fmt, limits):  # a header that lied
                raise too_many_pixels(*img.size, limits, fmt)
            decoded = img.size  # as stored (a JPEG draft already applied)
            strips = plan(data, img, reduction(decoded, spec), spec)  # large PNG, TIFF, WebP
            if fmt == "TIFF" and strips is None and width * height * 4 > BAND_BYTES:
                kind = _WHOLE  # cannot be split: decoded whole
                if width * height > pixel_limit(_WHOLE, limits):
                    raise too_many_pixels(*decoded, limits, _WHOLE)
            orientation, exif_status = read_orientation(img)
            if fmt == "TIFF" and orientation in _SWAPS_SIDES:  # Pillow gives the upright size
                (width, height), decoded = (height, width), decoded[::-1]
            factor = reduction(decoded, spec)
            with heavy_slot(whole_cost(kind, width * height, facts.samples), SLOT_WAIT_S):
                if strips is not None:  # never a full-size image of its own
                    small = strips.reduce(img, factor, cmyk)
                    todo = orientation
                else:
                    img.load()
                    # Pillow's TIFF loader applies the orientation itself and drops the tag.
                    todo = 1 if orientation != 1 and applied_by_loader(img) else orientation
                    # A thin giant not reduced: only what the model sees goes on (turned, it
                    # was a second full-size copy).
                    box = seen_box(spec, *img.size) if factor == 1 else None
                    seen = img if box is None else img.crop(box)
                    small = reduce_and_convert(seen, factor, cmyk=cmyk)
            # Nothing to reduce or convert: kept, not closed (a copy doubled a thin 40 MP one).
            keep_open = small is img
        except ServiceError:
            raise
        except MemoryError:
            raise PayloadTooLarge("There is not enough memory to decode this image now.") from None
        except Exception as exc:  # truncated data, bad chunks: Pillow raises many types
            raise _decode_failed(fmt, exc) from None
        finally:
            if not keep_open:
                img.close()
    upright = flatten(apply_orientation(to_srgb(small, icc), todo))
    target = "L" if spec.color == "gray" and not (keep_rgb and upright.mode == "RGB") else "RGB"
    big_gray = upright.mode == "L" and upright.width * upright.height > _CONVERT_LATER_PIXELS
    if upright.mode != target and not (gray_as_is and big_gray):
        upright = upright.convert(target)
    info = ImageInfo(
        format=fmt,
        width=width,
        height=height,
        mode=mode,
        orientation=orientation,
        frames=min(frames, FRAME_COUNT_CAP),
        decoded_width=decoded[0],  # as stored, like width and height
        decoded_height=decoded[1],
        exif=exif_status,
        frames_capped=frames > FRAME_COUNT_CAP,
    )
    return upright, info


def check_request(images: Sequence[bytes], spec: InputSpec, limits: ImageLimits) -> None:
    """Refuse (413) a request whose images' headers already show more decode work than its
    pixel budget, before any image is decoded (headers only: no pixels). Faults of single
    images are left to `prepare`, which reports them with the image's index."""
    total = 0
    for data in images:
        try:
            img, fmt, facts, _ = _open(data, limits)
        except ServiceError:
            continue
        with img:
            total += draft_and_cost(img, fmt, facts.scans, spec, lossless=facts.lossless)
    limits.budget().charge(total)


def prepare(
    data: bytes,
    spec: InputSpec,
    limits: ImageLimits,
    budget: DecodeBudget | None = None,
    on_decoded: Callable[[Image.Image, ImageInfo], None] | None = None,
) -> PreparedImage:
    """The whole ingestion path for one upload. Pass one `limits.budget()` to every image of
    a request so that the request's pixel and time budget covers them all. `on_decoded` sees
    the decoded picture (upright, in the model's colour space) before anything else; it must
    not change it."""
    t0 = time.perf_counter()
    keep_rgb = spec.background == "white"  # see to_paint
    budget = budget if budget is not None else limits.budget()
    img, info = decode(data, spec, limits, budget, gray_as_is=not spec.trim, keep_rgb=keep_rgb)
    if on_decoded is not None:
        on_decoded(img, info)
    t1 = time.perf_counter()
    # preparing counts against the request's CPU budget as decoding does (fuzz round 20)
    try:
        with timed(budget):
            if spec.background == "white" and spec.invert is False and light_ink(img):
                img = ink_on_paper(img)  # light lines on dark: as dark lines on white paper
                info = replace(info, inverted=True)
            img, paint = to_paint(img, spec)  # both read the whole picture's border, which
            invert = should_invert(img, spec)  # trimming and framing crop away
            if spec.trim:
                img = trim_and_centre(img)
            elif spec.frame is not None:
                img = frame_object(img, spec.frame, spec.width / spec.height)
            if invert:
                # Before resizing, so letterbox padding keeps the model's own background value.
                img = ImageOps.invert(img)
                info = replace(info, inverted=True)
                paint = None if paint is None else tuple(255 - v for v in paint)
            info = replace(info, blank=blank(img, spec))
            small = resize(img, spec)
            if paint is not None:
                # a model that inverts learnt white paper as black: its background is painted so
                # whatever this picture's polarity (a dark background it kept is the same)
                small = whiten_background(small, 255 if spec.invert is False else 0, paint)
            if small.mode == "L" and spec.color == "rgb":  # a thin gray picture, see decode
                small = small.convert("RGB")
            elif small.mode == "RGB" and spec.color == "gray":  # painted in colour, see above
                small = small.convert("L")
            array = to_array(small, spec)
    except MemoryError:
        raise PayloadTooLarge("There is not enough memory to prepare this image now.") from None
    t2 = time.perf_counter()
    return PreparedImage(
        array=array, info=info, decode_ms=(t1 - t0) * 1e3, preprocess_ms=(t2 - t1) * 1e3
    )
