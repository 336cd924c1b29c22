"""Crafted EXIF (type confusion, NaN, loops, bad orientation values) and the 8 valid
orientations."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from tests.app.hostile.base import (
    NAN_RATIONAL,
    O6,
    Case,
    jpeg_exif,
    jpeg_raw_exif,
    mk,
    png_exif,
    stored_for,
    tiff_with_tags,
)
from tests.images import (
    encode,
    exif_payload,
    long_,
    orientation_entry,
    short,
    tiff_ifd_bytes,
)


def crafted_exif() -> list[Case]:
    c = functools.partial(Case, group="exif", model="imagenet")
    return [
        c(
            "exif-negative-sshort-resolution-unit",
            lambda: jpeg_exif([O6, (0x0128, 8, 1, short(-3, signed=True))]),
            "photo",
        ),
        c(
            "exif-ascii-xresolution",
            lambda: jpeg_exif([O6, (0x011A, 2, 4, b"72\x00\x00")]),
            "photo",
        ),
        c(
            "exif-negative-slong-width",
            lambda: jpeg_exif([O6, (0x0100, 9, 1, long_(-5, signed=True))]),
            "photo",
        ),
        c(
            "exif-float-resolution-unit",
            lambda: jpeg_exif([O6, (0x0128, 11, 1, struct.pack("<f", 2.5))]),
            "photo",
        ),
        c(
            "exif-double-where-short-belongs",
            lambda: jpeg_exif([O6, (0x0128, 12, 1, struct.pack("<d", -1e308))]),
            "photo",
        ),
        c(
            "png-exif-chunk-type-confusion",
            lambda: png_exif(
                [O6, (0x0128, 8, 1, short(-1, signed=True)), (0x011A, 2, 4, b"72\x00\x00")]
            ),
            "photo",
        ),
        c(
            "webp-exif-type-confusion",
            lambda: encode(
                stored_for(6),
                "WEBP",
                quality=90,
                exif=exif_payload([O6, (0x0128, 8, 1, short(-3, signed=True))]),
            ),
            "photo",
        ),
        c(
            "tiff-orientation-with-type-confusion",
            lambda: tiff_with_tags(
                stored_for(6),
                [O6, (0x0128, 8, 1, short(-3, signed=True)), (0x011A, 2, 4, b"72\x00\x00")],
            ),
            "photo",
        ),
        c(
            "exif-nan-rationals",
            lambda: jpeg_exif([O6, (0x011A, 5, 1, NAN_RATIONAL), (0x011B, 10, 1, NAN_RATIONAL)]),
            "photo",
        ),
        c(
            "exif-big-endian-type-confusion",
            lambda: jpeg_raw_exif(
                b"Exif\x00\x00"
                + tiff_ifd_bytes(
                    [
                        (0x0112, 3, 1, struct.pack(">H", 6)),
                        (0x0128, 8, 1, struct.pack(">h", -3)),
                    ],
                    little=False,
                )
            ),
            "photo",
        ),
        c(
            "exif-bad-gps-pointer",
            lambda: jpeg_exif([O6, (0x8825, 4, 1, long_(0x7FFFFFF0))]),
            "photo",
        ),
        c(
            "exif-subifd-loop",  # the Exif IFD pointer points back at IFD0
            lambda: jpeg_exif([O6, (0x8769, 4, 1, long_(8))]),
            "photo",
        ),
        c(
            "exif-orientation-out-of-range",
            lambda: jpeg_exif([orientation_entry(9)], orientation=1),
            "photo",
        ),
        c("exif-orientation-zero", lambda: jpeg_exif([orientation_entry(0)], 1), "photo"),
        c(
            "exif-orientation-as-ascii",
            lambda: jpeg_exif([(0x0112, 2, 2, b"6\x00")], orientation=1),
            "photo",
        ),
        c(
            "exif-orientation-as-rational",
            lambda: jpeg_exif([(0x0112, 5, 1, struct.pack("<II", 6, 1))], orientation=1),
            "ok",
        ),
        c(
            "exif-truncated-ifd",
            lambda: jpeg_raw_exif(b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\x00\x12\x01", 1),
            "photo",
        ),
        c(
            "exif-huge-count",
            lambda: jpeg_exif([O6, (0x010E, 2, 0x7FFFFFFF, long_(16))]),
            "photo",
        ),
        c(
            "exif-garbage",
            lambda: jpeg_raw_exif(b"Exif\x00\x00" + bytes(range(256)) * 4, 1),
            "photo",
        ),
    ]


def orientations() -> list[Case]:
    def make(o: int) -> Callable[[], bytes]:
        return lambda: jpeg_exif([orientation_entry(o)], orientation=o)

    return [mk(f"exif-orientation-{o}", "valid", "imagenet", make(o), "photo") for o in range(1, 9)]
