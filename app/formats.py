"""Which image formats are accepted, told apart by their first bytes (the client's content type
is never trusted), and why an AVIF is refused before libavif reads it.

AVIF (round 34): Pillow's wheels decode it with libavif and dav1d. HEIC/HEIF (round 39: HEVC
in the same ISO base media container, the iPhone's photo format) is decoded by libheif and
libde265 through pi-heif, imported by the first HEIC only. Neither can be decoded at a
reduced size. An AVIF's whole
frame is decoded to YUV planes (1.5 to 8 bytes a pixel: 8-bit 4:2:0 to 12-bit 4:4:4 with alpha;
Pillow's decode then added two full RGB copies, 8.5 bytes a pixel for 8-bit: a 40 MP file took a
worker up by 342 MiB; large ones are now turned to RGB a strip at a time, app/avif_strips.py),
so AVIF has its own pixel limit (ImageLimits.max_avif_pixels), under the one for every format.
"""

from __future__ import annotations

from typing import Final

from PIL import Image

from app.avif_frames import Unreadable, av1_frames
from app.errors import (
    InvalidImage,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
    too_complex,
)
from app.exif import orientation_values
from app.heif_items import DERIVED, HEVC, HeifItems, heif_items
from app.isobmff import exif_blocks, meta_children

ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")
ACCEPTED_TEXT: Final = "JPEG, PNG, WebP, AVIF, HEIC, GIF (first frame), BMP or TIFF"

# The ftyp brands that mean "an AVIF image or image sequence" (AV1 Image File Format, 4.1);
# an ftyp naming only HEIF brands (heic, mif1 ...) is HEVC, which is not decoded here.
AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
# HEIF's brands (ISO/IEC 23008-12 annex B; Apple photos: heic, mif1): still images, and image
# sequences (refused, as animated AVIF is).
HEIF_STILL: Final = frozenset(b"heic heix heim heis mif1 mif2".split())
HEIF_SEQUENCE: Final = frozenset(b"hevc hevx hevm hevs msf1".split())
# Pillow's AVIF reader decodes the EXIF orientation field as it opens a file, a Python object
# a value (round 43: 2.5 million RATIONALs took a worker up by 700 MiB); the field holds one.
MAX_EXIF_ORIENTATION_VALUES: Final = 64


def ftyp_brands(data: bytes) -> set[bytes]:
    """The major and compatible brands of a leading ftyp box (within the first 256 bytes:
    an AVIF brand listed 13th was read as a HEIC photo, round 34)."""
    size = int.from_bytes(data[:4], "big")
    end = min(max(size, 16), 256, len(data))
    return {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}


def sniff_format(data: bytes) -> str | None:
    """Identify the container from magic bytes."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        brands = ftyp_brands(data)
        if data[8:12] in HEIF_STILL - {b"mif1", b"mif2"}:  # a HEVC major brand ("heic") decides
            return "HEIF"
        if brands & AVIF_BRANDS:
            return "AVIF"
        if brands & (HEIF_STILL | HEIF_SEQUENCE):
            return "HEIF"
    return None


def _exif_orientation_values(data: bytes) -> int:
    try:
        blocks = exif_blocks(data, meta_children(data)[1])
    except Unreadable:
        return 0  # libavif finds no EXIF either
    return max((orientation_values(block) for block in blocks), default=0)


def avif_refusal(data: bytes, limit: int) -> ServiceError | None:
    """Why an AVIF is not decoded, or None. The sizes are read from the file before libavif
    parses it (app/avif_frames.py): every frame its AV1 items code (a grid's tiles and an
    alpha plane added up: at most 1.5 times the limit, since a 12.5 MP AVIF with alpha added
    137 MiB against 109 without) and every size it declares, and the bytes its decoded planes
    take (bit depth and chroma subsampling from its sequence headers: a 13 MP 12-bit 4:4:4
    AVIF's 78 MB took a worker up by 98 MiB, round 37). Also readies Pillow's AVIF reader."""
    from PIL import AvifImagePlugin  # 3 MiB: imported by the first AVIF only

    # One thread per decode: decodes already run one per core (ImageLimits.decode_concurrency);
    # Pillow's default, every core for each AVIF, let one upload take the whole machine.
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1
    try:
        frames = av1_frames(data)
    except Exception as exc:  # fails closed: a box the reader trips over is never decoded
        why = exc if isinstance(exc, Unreadable) else "its boxes are damaged"
        return InvalidImage(
            f"The data starts like an AVIF file but its image data could not be read ({why}), "
            f"so it was not decoded. Accepted: {ACCEPTED_TEXT}."
        )
    if frames.sequence:
        return UnsupportedMediaType(
            "The upload is an animated AVIF (an image sequence); only still AVIF images are "
            "accepted. Send one frame as a still AVIF, PNG or JPEG.",
            accepted=list(ACCEPTED_FORMATS),
        )
    if (values := _exif_orientation_values(data)) > MAX_EXIF_ORIENTATION_VALUES:
        return too_complex("AVIF", f"an EXIF orientation field of {values:,} values", "one")
    sizes = (*frames.coded, *frames.declared)
    total = sum(w * h for w, h in frames.coded)
    return _too_costly("AVIF", ("frame", "frames"), sizes, total, frames.plane_bytes, limit)


def heif_refusal(data: bytes, limit: int) -> ServiceError | None:
    """Why a HEIC/HEIF is not decoded, or None (the rules of avif_refusal, the sizes read by
    app/heif_items.py: every HEVC item's coded picture, every size declared, every grid or
    overlay canvas). Also readies pi-heif's Pillow reader, one thread per decode."""
    import pi_heif  # 2 MiB and libheif: imported by the first HEIC only

    if "HEIF" not in Image.OPEN:
        pi_heif.register_heif_opener()
    pi_heif.options.DECODE_THREADS = 1
    try:
        items = heif_items(data)
    except Exception as exc:  # fails closed, as for AVIF
        why = exc if isinstance(exc, Unreadable) else "its boxes are damaged"
        return InvalidImage(
            f"The data starts like a HEIC/HEIF file but its image data could not be read "
            f"({why}), so it was not decoded. Accepted: {ACCEPTED_TEXT}."
        )
    if items.sequence or not ftyp_brands(data) & HEIF_STILL:
        return UnsupportedMediaType(
            "The upload is a HEIF image sequence (a burst or an animation); only still HEIC/HEIF "
            "images are accepted. Send one frame as a still HEIC, PNG or JPEG.",
            accepted=list(ACCEPTED_FORMATS),
        )
    if items.primary not in (HEVC, *DERIVED) or items.other_codecs:
        primary = set() if items.primary in (HEVC, *DERIVED) else {items.primary}
        kinds = sorted(k.decode("latin-1") for k in primary | items.other_codecs)
        return UnsupportedMediaType(
            f"The HEIF file holds images coded as {', '.join(repr(k) for k in kinds)}; only "
            "HEVC (HEIC) images are decoded here. Send it as JPEG, PNG or AVIF.",
            accepted=list(ACCEPTED_FORMATS),
        )
    sizes = (*items.coded, *items.declared, *items.canvases)
    # every coded picture once, or the primary's decode, which may use one many times over
    total = max(sum(w * h for w, h in items.coded), items.decoded)
    what = ("picture", "coded images (alpha included), as often as its picture uses them")
    refusal = _too_costly("HEIC", what, sizes, total, items.plane_bytes, limit)
    return refusal or _heic_memory(items, _largest(sizes), limit)


def _largest(sizes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    return max((*sizes, (0, 0)), key=lambda s: s[0] * s[1])


def _heic_memory(items: HeifItems, size: tuple[int, int], limit: int) -> PayloadTooLarge | None:
    """libheif's peak, estimated (round 39's attack, a worker's added RSS at 13 MP): the
    picture's planes, the RGB picture made from them (3 bytes a pixel), a second one where
    chroma is full size (4:4:4: +132 MiB for 8-bit against +60-83 for 4:2:0) and 3 bytes a
    pixel of every overlay canvas (+100-126 MiB for one 4:2:0 layer). At most 6 bytes a pixel
    of the limit: 8- and 10-bit 4:2:0 up to the limit, 4:4:4 and overlays up to 2/3 of it."""
    w, h = size
    per_pixel = items.plane_pixel + 3 + 3 * items.full_chroma
    need = w * h * per_pixel + 3 * items.overlay_pixels
    if need <= 6 * limit:
        return None
    return PayloadTooLarge(
        f"Decoding this HEIC would take about {need / 1e6:,.0f} MB ({w}x{h}, {per_pixel:g} bytes "
        "a pixel: its decoded planes, the RGB picture made from them, another where chroma is "
        "4:4:4, and 3 for each pixel of an overlay canvas); HEIC is decoded whole, so it may take "
        f"at most {6 * limit / 1e6:,.0f} MB. Send it with 4:2:0 chroma, smaller, or as JPEG or "
        "PNG.",
        limit_bytes=6 * limit,
    )


def _too_costly(
    fmt: str,
    what: tuple[str, str],
    sizes: tuple[tuple[int, int], ...],
    total: int,
    plane_bytes: float,
    limit: int,
) -> PayloadTooLarge | None:
    """The 413 of a picture decoded whole (AVIF, HEIC): its largest size (coded, declared, a
    canvas) over `limit`, the pixels its decode makes (`total`) over 1.5 times it, or its largest
    picture's decoded planes over 3 bytes a pixel of it (8-bit 4:4:4 at the limit; 12-bit
    4:4:4 is twice that). None: it may be decoded."""
    w, h = _largest(sizes)
    if w * h > limit or 2 * total > 3 * limit:
        return PayloadTooLarge(
            f"The {fmt} image holds a {w}x{h} = {w * h:,} pixel {what[0]}"
            + (f" ({total:,} pixels in all its {what[1]})" if total > w * h else "")
            + f"; {fmt} is decoded whole, so its limit is {limit:,} pixels. Send it as JPEG, "
            "PNG or WebP.",
            limit_pixels=limit,
        )
    if plane_bytes > 3 * limit:
        per_pixel = plane_bytes / max(w * h, 1)  # colour and alpha
        return PayloadTooLarge(
            f"The {fmt} image's decoded planes take {plane_bytes / 1e6:,.1f} MB "
            f"({per_pixel:g} bytes a pixel: samples over 8 bits take 2 bytes, 4:4:4 chroma is "
            f"full size); {fmt} is decoded whole, so they may take at most {3 * limit / 1e6:,.1f} "
            "MB. Send it with 8-bit samples or 4:2:0 chroma, smaller, or as PNG.",
            limit_bytes=3 * limit,
        )
    return None
