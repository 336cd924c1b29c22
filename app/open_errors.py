"""What to answer when Pillow cannot open a file whose first bytes name a format it reads.

Pillow's parsers raise many exception types on crafted or unusual headers; the client gets
the reason where one is known (a PNG text-chunk bomb, TIFF samples or a BMP compression that
is not decoded here) and otherwise that the header is damaged, with what is accepted.
"""

from __future__ import annotations

from app.decode_guard import bmp_compression
from app.errors import InvalidImage, PayloadTooLarge, ServiceError, UnsupportedMediaType
from app.fsutil import out_of_descriptors
from app.tiff_fields import TIFF_SAMPLES_ACCEPTED, tiff_sample_format


def unreadable_header(fmt: str, data: bytes, exc: BaseException, accepted: str) -> ServiceError:
    busy = out_of_descriptors(exc)  # round 42: a valid PNG was a 422 "damaged header"
    if busy is not None:
        return busy
    said = str(exc)
    if fmt == "PNG" and "Decompressed" in said:  # Pillow's MAX_TEXT_CHUNK guard
        return PayloadTooLarge(
            "The PNG carries a compressed text or colour-profile chunk that expands to "
            "more than 1 MB (a decompression bomb), so it is refused."
        )
    if fmt == "PNG" and "text chunks" in said:  # Pillow's MAX_TEXT_MEMORY guard (64 MB)
        return PayloadTooLarge(
            "The PNG carries more than 64 MB of text metadata before its pixels (compressed "
            "text chunks), so it is refused. Send it without that metadata."
        )
    samples = tiff_sample_format(data) if fmt == "TIFF" else None
    if samples is not None:
        return InvalidImage(
            f"The TIFF stores {samples} samples, which cannot be decoded here. Accepted "
            f"TIFF samples: {TIFF_SAMPLES_ACCEPTED}."
        )
    # BI_JPEG / BI_PNG (a JPEG or PNG stream inside a BMP, meant for printers) and others; the
    # first two set the bit count to 0, which Pillow reports as a depth, not a compression
    if fmt == "BMP" and ("compression" in said.lower() or bmp_compression(data) in (4, 5)):
        return UnsupportedMediaType(  # a file that may be fine, of a kind not decoded here
            "The BMP stores its pixels with a compression this server does not decode (such "
            "as a JPEG or PNG stream inside the BMP). Send uncompressed or RLE BMP, or the "
            f"JPEG or PNG itself. Accepted: {accepted}."
        )
    article = "an" if fmt[:1] in "AEIOU" else "a"  # an AVIF, a HEIF
    return InvalidImage(
        f"The data starts like {article} {fmt} file but its header is damaged or incomplete, so "
        f"it could not be read. Accepted: {accepted}."
    )
