"""Shared pieces of the hostile-input corpus: the case type, the real photo and digit every
case is made from, and EXIF/TIFF writers."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from tests.conftest import DATA  # $IMGCLASS_TRAINING_DATA_DIR, as scripts/fetch-data
from tests.images import (
    encode,
    exif_payload,
    heic,
    long_,
    orientation_entry,
    png_with_exif_chunk,
    short,
    tiff_ifd_bytes,
)

PHOTO = DATA / "photos" / "foolbox" / "imagenet_08_915.jpg"  # a yurt (ImageNet class 915)
DIGIT = DATA / "photos" / "foolbox" / "mnist_00_7.png"  # a handwritten 7
DIGIT_LABEL = "7"

# photo: 2xx and the top-1 is among the plain photo's top-5 (or, for the digits model, the
# digit's true label); ok: 2xx; reject: one of `statuses`; either: 2xx or one of `statuses`
# (where both are defensible, e.g. a damaged file libjpeg can still partly decode).
Expect = Literal["photo", "ok", "reject", "either"]
Payload = bytes | list[bytes]


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Payload]
    expect: Expect
    statuses: tuple[int, ...] = ()
    group: str = ""
    model: str = "imagenet"
    slow: bool = False


def mk(
    name: str,
    group: str,
    model: str,
    make: Callable[[], Payload],
    expect: Expect,
    statuses: tuple[int, ...] = (),
    slow: bool = False,
) -> Case:
    return Case(name, make, expect, statuses, group, model, slow)


@functools.cache
def photo() -> Image.Image:
    with Image.open(PHOTO) as im:
        return im.convert("RGB")


@functools.cache
def digit() -> Image.Image:
    with Image.open(DIGIT) as im:
        return im.convert("L")


@functools.cache
def photo_jpeg() -> bytes:
    return encode(photo(), "JPEG", quality=90)


# Orientation value -> the transpose that makes a stored image upright, and its inverse
# (used to store the photo so that a correct reader shows it upright again).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
STORE = {**UPRIGHT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def stored_for(orientation: int, img: Image.Image | None = None) -> Image.Image:
    img = img if img is not None else photo()
    return img if orientation == 1 else img.transpose(STORE[orientation])


def jpeg_exif(entries: list[tuple[int, int, int, bytes]], orientation: int = 6) -> bytes:
    return encode(stored_for(orientation), "JPEG", quality=90, exif=exif_payload(entries))


def jpeg_raw_exif(payload: bytes, orientation: int = 6) -> bytes:
    return encode(stored_for(orientation), "JPEG", quality=90, exif=payload)


def png_exif(entries: list[tuple[int, int, int, bytes]], orientation: int = 6) -> bytes:
    return png_with_exif_chunk(encode(stored_for(orientation), "PNG"), tiff_ifd_bytes(entries))


O6 = orientation_entry(6)


def tiff_with_tags(img: Image.Image, extra: list[tuple[int, int, int, bytes]]) -> bytes:
    """An uncompressed RGB TIFF of `img` whose first IFD also holds `extra` entries as given
    (type confusion included): the TIFF's own tags are its EXIF."""
    w, h = img.size
    pixels = img.convert("RGB").tobytes()
    entries = [
        (256, 4, 1, long_(w)),
        (257, 4, 1, long_(h)),
        (258, 3, 3, short(8) + short(8) + short(8)),
        (259, 3, 1, short(1)),
        (262, 3, 1, short(2)),
        (273, 4, 1, long_(0)),  # patched below, once the IFD's size is known
        (277, 3, 1, short(3)),
        (278, 4, 1, long_(h)),
        (279, 4, 1, long_(len(pixels))),
        *extra,
    ]
    raw = tiff_ifd_bytes(entries)
    at = struct.pack("<HHI", 273, 4, 1) + long_(0)
    raw = raw.replace(at, struct.pack("<HHI", 273, 4, 1) + long_(len(raw)))
    return raw + pixels


NAN_RATIONAL = struct.pack("<II", 0, 0)


@functools.cache
def valid_files() -> dict[str, bytes]:
    p = photo()
    return {
        "JPEG": photo_jpeg(),
        "PNG": encode(p, "PNG"),
        "GIF": encode(p, "GIF"),
        "WEBP": encode(p, "WEBP", quality=85),
        "BMP": encode(p, "BMP"),
        "TIFF": encode(p, "TIFF"),
        "AVIF": encode(p, "AVIF", quality=75, speed=8),
        "HEIF": heic(p, quality=75),
    }
