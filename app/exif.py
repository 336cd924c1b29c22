"""EXIF orientation, read defensively and applied by hand.

Any failure while reading the tag means "no rotation", reported as such. The transpose is
done here from the orientation value alone: `ImageOps.exif_transpose` re-serialises the
whole EXIF block and raises on type-confused tags that do not matter to us.
"""

from __future__ import annotations

import logging
import struct
from typing import Final, Literal

from PIL import Image

from app.tiff_fields import first_ifd

logger = logging.getLogger(__name__)

ORIENTATION_TAG: Final = 0x0112

# The transpose that makes a stored image upright, per EXIF orientation value (1 = as stored).
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# What happened to the orientation, as reported to clients:
#   none: no orientation tag; applied: a value 1-8 was applied (1 = upright as stored);
#   unreadable: the EXIF block could not be parsed, so no rotation; invalid: the tag holds
#   something other than a value 1-8 (wrong type or out of range), so no rotation.
ExifStatus = Literal["none", "applied", "unreadable", "invalid"]


def read_orientation(img: Image.Image) -> tuple[int, ExifStatus]:
    """(orientation to apply, status). Never raises: hostile EXIF is routine."""
    try:
        exif = img.getexif()  # the first IFD's fields, each decoded only when asked for
        if (values := orientation_values(img.info.get("exif"))) > 1:
            # Pillow would make a Python object of each (2.5 million RATIONALs in a 20 MB
            # upload took a worker up by 700 MiB, round 43); one value is all there is to read
            logger.info("EXIF orientation holds %d values, not one; ignored", values)
            return 1, "invalid"
        raw = exif.get(ORIENTATION_TAG)
    except Exception as exc:  # Pillow's EXIF parser raises many types on crafted blocks
        logger.info("EXIF unreadable, orientation ignored: %s: %s", type(exc).__name__, exc)
        return 1, "unreadable"
    if raw is None:
        # Pillow reads a block that is not TIFF as no tags at all (round 28: "none")
        return 1, "unreadable" if _not_tiff(img.info.get("exif")) else "none"
    # bool is an int subclass and tuples/strings/rationals come from type-confused tags.
    if type(raw) is not int or not 1 <= raw <= 8:
        logger.info("EXIF orientation %r is not a value 1-8; ignored", raw)
        return 1, "invalid"
    return raw, "applied"


def orientation_values(block: object) -> int:
    """How many values the orientation field of an EXIF block's first IFD holds, read from
    the bytes (no Pillow); 0 when there is none or the block cannot be read."""
    if not isinstance(block, bytes):
        return 0
    body = block[6:] if block.startswith(b"Exif\x00\x00") else block
    if body[:4] not in (b"II*\x00", b"MM\x00*"):
        return 0
    bo, entries = first_ifd(body)
    for entry in entries:
        tag, _, count = struct.unpack_from(bo + "HHI", body, entry)
        if tag == ORIENTATION_TAG:
            return int(count)
    return 0


def _not_tiff(block: object) -> bool:
    """An EXIF block is there (JPEG's starts with Exif\\0\\0) but holds no TIFF header."""
    if not isinstance(block, bytes) or not block:
        return False
    body = block[6:] if block.startswith(b"Exif\x00\x00") else block
    return body[:4] not in (b"II*\x00", b"MM\x00*")


def swaps_axes(orientation: int) -> bool:
    """Orientations 5-8 turn the image by 90 degrees (width and height trade places)."""
    return orientation >= 5


def apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    """The upright image for an orientation value 1-8 (other values: unchanged)."""
    method = _UPRIGHT.get(orientation)
    return img if method is None else img.transpose(method)


def applied_by_loader(img: Image.Image) -> bool:
    """After load: is the orientation tag gone? Pillow's TIFF loader transposes the image
    itself and deletes the tag, so it must not be applied a second time."""
    try:
        return img.getexif().get(ORIENTATION_TAG) is None
    except Exception:  # unreadable now means it was read before: Pillow did not apply it
        return False
