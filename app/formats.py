"""Which image formats are accepted, told apart by their first bytes (the client's content type
is never trusted), and what an AVIF file declares about its size before libavif reads it.

AVIF (round 34): Pillow's wheels decode it with libavif and dav1d. Its still-image relatives
HEIC/HEIF (HEVC inside the same ISO base media container) are not decoded by Pillow and stay
a 415 that says so (app/not_image.py). An AVIF cannot be decoded at a reduced size: the whole
frame is decoded to YUV, converted to RGB and copied once more into Pillow's image, about
8.5 bytes per pixel at peak (a 40 MP file took a worker up by 342 MiB), so AVIF has its own
pixel limit (ImageLimits.max_avif_pixels), under the one for every format.
"""

from __future__ import annotations

from typing import Final

ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
ACCEPTED_TEXT: Final = "JPEG, PNG, WebP, AVIF, GIF (first frame), BMP or TIFF"

# The ftyp brands that mean "an AVIF image or image sequence" (AV1 Image File Format, 4.1);
# an ftyp naming only HEIF brands (heic, mif1 ...) is HEVC, which is not decoded here.
AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})

_BOX_WALK_CAP: Final = 4096  # boxes looked at for the declared size; real files have < 50
_CONTAINERS: Final = {b"meta": 4, b"iprp": 0, b"ipco": 0}  # box type -> header bytes to skip


def ftyp_brands(data: bytes) -> set[bytes]:
    """The major and compatible brands of a leading ftyp box (within the first 64 bytes)."""
    size = int.from_bytes(data[:4], "big")
    end = min(max(size, 16), 64, len(data))
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
    if len(data) >= 12 and data[4:8] == b"ftyp" and ftyp_brands(data) & AVIF_BRANDS:
        return "AVIF"
    return None


def read_avif_header(data: bytes) -> tuple[int, int]:
    """Ready Pillow's AVIF reader, and return the largest (width, height) any `ispe` (image
    spatial extents) property of the file's meta box declares, (0, 0) when none is found:
    read before libavif parses the file, so that a size over the limit is a 413 naming it
    (libavif refuses sides over 32768 pixels itself, which could only be said as a damaged
    header)."""
    from PIL import AvifImagePlugin  # 3 MiB: imported by the first AVIF only

    # One thread per decode: decodes already run one per core (ImageLimits.decode_concurrency);
    # Pillow's default, every core for each AVIF, let one upload take the whole machine.
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1
    largest, seen = (0, 0), 0
    stack = [(0, len(data))]
    while stack and seen < _BOX_WALK_CAP:
        pos, end = stack.pop()
        while pos + 8 <= end and seen < _BOX_WALK_CAP:
            seen += 1
            size, kind, body = (
                int.from_bytes(data[pos : pos + 4], "big"),
                data[pos + 4 : pos + 8],
                pos + 8,
            )
            if size == 1 and pos + 16 <= end:  # a 64-bit size follows the type
                size, body = int.from_bytes(data[pos + 8 : pos + 16], "big"), pos + 16
            elif size == 0:  # to the end of the enclosing box
                size = end - pos
            if size < body - pos or pos + size > end:
                break  # damaged: libavif will say so
            if kind == b"ispe" and body + 12 <= pos + size:  # version/flags, width, height
                width = int.from_bytes(data[body + 4 : body + 8], "big")
                height = int.from_bytes(data[body + 8 : body + 12], "big")
                largest = max(largest, (width, height), key=lambda s: s[0] * s[1])
            elif kind in _CONTAINERS:
                stack.append((body + _CONTAINERS[kind], pos + size))
            pos += size
    return largest
