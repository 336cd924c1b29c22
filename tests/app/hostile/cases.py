"""The hostile-input corpus, generated in code: crafted EXIF, CPU and memory bombs, huge
headers, truncated and corrupt files of every format, polyglots, non-images, and the
odd-but-valid images every user has. Shared by the HTTP tests and bench/peak_memory.py."""

from __future__ import annotations

from tests.app.hostile.base import (
    DIGIT,
    DIGIT_LABEL,
    PHOTO,
    Case,
    Payload,
    digit,
    jpeg_raw_exif,
    photo,
    photo_jpeg,
    stored_for,
)
from tests.app.hostile.bomb_cases import (
    cpu_and_memory,
    gif_many_frames,
    huge_headers,
    progressive_bomb,
    structure_bomb,
    structures,
)
from tests.app.hostile.exif_cases import crafted_exif, orientations
from tests.app.hostile.file_cases import (
    damaged,
    not_images,
    odd_but_valid,
    polyglots,
)
from tests.app.hostile.whole_decode_cases import whole_decodes
from tests.images import big_png

__all__ = [
    "CASES",
    "DIGIT",
    "DIGIT_LABEL",
    "PHOTO",
    "Case",
    "Payload",
    "big_png",
    "digit",
    "gif_many_frames",
    "jpeg_raw_exif",
    "photo",
    "photo_jpeg",
    "progressive_bomb",
    "stored_for",
    "structure_bomb",
]

CASES: list[Case] = [
    *crafted_exif(),
    *orientations(),
    *cpu_and_memory(),
    *whole_decodes(),
    *huge_headers(),
    *structures(),
    *damaged(),
    *polyglots(),
    *not_images(),
    *odd_but_valid(),
]
