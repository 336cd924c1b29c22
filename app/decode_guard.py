"""Bounds on decoding work: cost found from the headers before decoding, a pixel and time
budget per request, and a process-wide cap on decodes running at once.

Everything here reads container structure with bounded loops over the bytes; nothing here
decodes pixels.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from app.errors import InvalidImage, NotReady, PayloadTooLarge, too_complex
from app.jpeg_walk import JpegStructure as JpegStructure
from app.jpeg_walk import count_jpeg_scans as count_jpeg_scans
from app.jpeg_walk import jpeg_structure as jpeg_structure
from app.tiff_fields import first_ifd, python_bytes, tiff_uint

logger = logging.getLogger(__name__)

# Frames are counted only this far: the count is reported, never used, and counting every
# page of a 40,000-page TIFF was the CPU bomb.
FRAME_COUNT_CAP: Final = 100
# libjpeg's default progressive script has 10 scans (6 for gray); a progressive JPEG costs
# about one pass over every coefficient per scan, so its decode is charged as
# pixels x scans / this many.
NORMAL_SCANS: Final = 10
# Container structure beyond which a file is refused before Pillow parses it record by
# record in Python (the counts of real files are far below these).
MAX_PNG_CHUNKS: Final = 100_000
MAX_PNG_META_CHUNKS: Final = 2_000
MAX_GIF_HEADER_BLOCKS: Final = 20_000
GIF_WALK_STEPS: Final = 500_000
MAX_BMP_RLE_BYTES: Final = 1024 * 1024
MAX_TIFF_STRIPS: Final = 65_536
# Python objects Pillow may make from the first page's fields besides its strips and tiles:
# an 8-bit palette is 768 values (24 KB), a 16-bit transfer function 196,608 (6 MB); one
# XResolution of 2.5 million RATIONALs (19 MB of a 20 MB file) took a worker up by 700 MiB.
MAX_TIFF_FIELD_BYTES: Final = 8 << 20
# A TIFF tile may be larger than its image (tiles are multiples of 16 on each side) only up to
# this many pixels (1024 x 1024).
MAX_TILE_PIXELS: Final = 1 << 20
# How long a request waits for a decode slot before the server says it is busy.
SLOT_WAIT_S: Final = 30.0
# A JPEG-compressed TIFF strip or tile is decoded by libtiff, which stops a progressive
# stream after LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER scans (its default: 100). The budget
# charges such a TIFF its pixels once, like an ordinary JPEG, but a 140 KB 6000x6000 TIFF
# whose strip repeats its last scan ran 99 passes: 2.2 s per image. JPEG-in-TIFF is
# baseline (progressive streams are not legal there), so allow one ordinary progressive
# script (up to NORMAL_SCANS scans); libtiff reads the variable at each decode. Set before
# any thread starts decoding (at import); an operator's own value is kept.
TIFF_JPEG_SCAN_ENV: Final = "LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER"

os.environ.setdefault(TIFF_JPEG_SCAN_ENV, str(NORMAL_SCANS + 1))  # scans 1-10 pass


def count_tiff_pages(data: bytes, cap: int) -> int:
    """Pages (IFDs in the main chain) counted up to cap, stopping at a loop or a bad offset."""
    if len(data) < 8:
        return 0
    bo = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(bo + "I", data, 4)
    seen: set[int] = set()
    while 0 < offset <= len(data) - 2 and offset not in seen and len(seen) < cap:
        seen.add(offset)
        (entries,) = struct.unpack_from(bo + "H", data, offset)
        nxt = offset + 2 + 12 * entries
        if nxt + 4 > len(data):
            break
        (offset,) = struct.unpack_from(bo + "I", data, nxt)
    return len(seen)


def count_gif_frames(data: bytes, cap: int) -> int:
    """Image descriptors of a GIF counted up to cap, by walking blocks and sub-blocks (at most
    GIF_WALK_STEPS of them: the count is a report, not worth more). Refuses (413) a file with
    more than MAX_GIF_HEADER_BLOCKS extension sub-blocks before its first image, which
    Pillow would read one by one in Python."""
    n = len(data)
    if n < 13:
        return 0
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = steps = 0
    while pos < n and frames < cap and steps < GIF_WALK_STEPS:
        kind = data[pos]
        if kind == 0x3B:  # trailer
            break
        if kind == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif kind == 0x2C:  # image descriptor (+ local colour table), LZW code size, sub-blocks
            frames += 1
            if pos + 10 > n:
                break
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        else:
            break
        while pos < n and data[pos] and steps < GIF_WALK_STEPS:  # sub-blocks, 0 ends them
            pos += data[pos] + 1
            steps += 1
            if not frames and steps > MAX_GIF_HEADER_BLOCKS:
                raise too_complex(
                    "GIF",
                    f"more than {MAX_GIF_HEADER_BLOCKS:,} metadata blocks before its first image",
                    "a few",
                )
        pos += 1
    return frames


def check_png_chunks(data: bytes) -> None:
    """Refuse (413) a PNG with absurd numbers of chunks, which Pillow parses one by one in
    Python (1.3 million empty text chunks in 19 MB took 12 s). Animation chunks (fcTL, fdAT)
    count only towards the total: Pillow reads them for the first frame only."""
    pos, n, total, meta = 8, len(data), 0, 0
    while pos + 8 <= n:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        total += 1
        if kind not in (b"IDAT", b"fcTL", b"fdAT", b"IHDR", b"PLTE", b"IEND"):
            meta += 1  # the chunks besides the image's own (IHDR, PLTE, IEND counted 3 too many)
        if total > MAX_PNG_CHUNKS or meta > MAX_PNG_META_CHUNKS:
            what = (
                f"more than {MAX_PNG_CHUNKS:,} chunks"
                if total > MAX_PNG_CHUNKS
                else (f"more than {MAX_PNG_META_CHUNKS:,} metadata chunks")
            )
            raise too_complex("PNG", what, "a few dozen")
        if kind == b"IEND":
            break
        pos += 12 + length


# Bytes per value of each TIFF field type (libtiff reads a directory's every value at open).
_TIFF_TYPE_BYTES: Final = {
    **dict.fromkeys((1, 2, 6, 7), 1),
    **dict.fromkeys((3, 8), 2),
    **dict.fromkeys((4, 9, 11, 13), 4),
    **dict.fromkeys((5, 10, 12, 16, 17, 18), 8),
}


def check_tiff_strips(data: bytes) -> None:
    """Refuse (413) a TIFF whose first page has more than MAX_TIFF_STRIPS strips or tiles:
    Pillow turns each offset into a Python int and feeds them one at a time (1.2 million
    one-row strips took 6.7 s). Also refuse tiles larger than the image beyond
    MAX_TILE_PIXELS: libtiff decodes a tile whole into one buffer, so a 12 KB file of a
    1000x1000 image with one 16384x16384 tile took 788 MB (23168x23168: 1.5 GB, 3 s). And
    refuse tag values that add up to more than the file: libtiff reads every value of the
    page's directory into a buffer of its own, so values stored once and pointed at by many
    tags cost the file's size many times over (round 35); and fields, strips and tiles aside,
    whose values would become more than MAX_TIFF_FIELD_BYTES of Python objects (round 43)."""
    bo, entries = first_ifd(data)
    sizes: dict[int, int] = {}
    values = 0  # bytes of the tag values stored apart from their entries, within the file
    objects = 0  # bytes of Python objects those values become, strips and tiles aside
    for entry in entries:
        tag, kind, count = struct.unpack_from(bo + "HHI", data, entry)
        size = count * _TIFF_TYPE_BYTES.get(kind, 0)
        if size > 4 and struct.unpack_from(bo + "I", data, entry + 8)[0] + size <= len(data):
            values += size
        if values > len(data):
            raise PayloadTooLarge(
                f"The TIFF's first page declares more bytes of tag values than its {len(data):,} "
                "bytes hold: values that overlap, each read again by the decoder (a 4 MB file "
                "of 300 tags on the same 4 MB took it over 1 GB), so it is refused.",
            )
        if tag in (273, 279, 324, 325):  # strip/tile offsets, sizes
            if count > MAX_TIFF_STRIPS:
                raise too_complex(
                    "TIFF",
                    f"more than {MAX_TIFF_STRIPS:,} strips or tiles",
                    "a few thousand at most",
                )
        elif (objects := objects + python_bytes(kind, count)) > MAX_TIFF_FIELD_BYTES:
            raise too_complex(
                "TIFF",
                f"fields of more values than fit in {MAX_TIFF_FIELD_BYTES >> 20} MB once read, "
                f"{count:,} in tag {tag} alone",
                "a few hundred values besides their strips",
            )
        if tag in (256, 257, 322, 323):  # ImageWidth, ImageLength, TileWidth, TileLength
            sizes[tag] = tiff_uint(data, bo, entry) or 0
    tile_w, tile_h = sizes.get(322, 0), sizes.get(323, 0)
    width, height = sizes.get(256, 0), sizes.get(257, 0)
    # An unreadable image size counts as 0: then only tiles up to MAX_TILE_PIXELS pass.
    if tile_w * tile_h > max(width * height, MAX_TILE_PIXELS):
        raise PayloadTooLarge(
            f"The TIFF stores its {width}x{height} image in tiles of {tile_w}x{tile_h} "
            "pixels; each tile is decoded whole, so a tile larger than the image (and than "
            f"{MAX_TILE_PIXELS:,} pixels) is refused (ordinary tiles are 256x256 or 512x512).",
            limit_tile_pixels=MAX_TILE_PIXELS,
        )


def check_bmp(data: bytes) -> None:
    """Refuse (413) an RLE-compressed BMP with more than MAX_BMP_RLE_BYTES of pixel data:
    Pillow decodes RLE in Python, one run at a time (2.5 million one-pixel runs in 5 MB took
    3.4 s). A width that is not positive or a zero height is a 422 (Pillow reads a negative
    width as about 4 billion and reported a pixel-limit 413)."""
    compression = bmp_compression(data)
    if compression is None:
        return
    width, height = struct.unpack_from("<ii", data, 18)
    if width <= 0 or height == 0:
        raise InvalidImage(
            f"The BMP header is invalid: it gives {width}x{height} pixels. A BMP's width must "
            "be positive and its height non-zero (negative only for top-down rows)."
        )
    (offset,) = struct.unpack_from("<I", data, 10)
    if compression in (1, 2) and len(data) - offset > MAX_BMP_RLE_BYTES:
        raise too_complex(
            "BMP",
            f"more than {MAX_BMP_RLE_BYTES // 1024:,} KB of run-length-encoded pixels",
            "far less; run-length encoding is for small images",
        )


def bmp_run_length(data: bytes) -> bool:
    """Whether a BMP's pixels are run-length encoded (RLE8 or RLE4): Pillow then decodes the
    whole picture in Python, into a bytearray copied once more (a 331 KB RLE8 BMP of
    8000x5000 took a worker up by 115 MiB, round 35)."""
    return bmp_compression(data) in (1, 2)


def bmp_compression(data: bytes) -> int | None:
    """A BMP header's compression field (1, 2: RLE8, RLE4; 4, 5: a JPEG or PNG stream), or
    None for a header without one (OS/2) or a file too short to hold it."""
    if len(data) < 34 or struct.unpack_from("<I", data, 14)[0] < 40:
        return None
    return int(struct.unpack_from("<I", data, 30)[0])


class DecodeBudget:
    """Work allowed to one request, shared by all its images: pixels decoded (weighted by
    progressive-JPEG scans) and seconds spent decoding. Not thread-safe: one per request."""

    def __init__(self, max_pixels: int, max_seconds: float) -> None:
        self.max_pixels = max_pixels
        self.max_seconds = max_seconds
        self.pixels = 0
        self.seconds = 0.0

    def charge(self, pixels: int) -> None:
        """Count work before it is done; refuse (413) when the request would go over."""
        if self.pixels + pixels > self.max_pixels:
            raise PayloadTooLarge(
                f"Decoding this request would take {self.pixels + pixels:,} pixels of work "
                f"(a progressive JPEG's pixels count once per {NORMAL_SCANS} scans or part of "
                f"{NORMAL_SCANS}); the limit per request is {self.max_pixels:,}. "
                "Send fewer or smaller images per request.",
                limit_request_pixels=self.max_pixels,
            )
        self.pixels += pixels

    def spend(self, seconds: float) -> None:
        """Add decode time; refuse (413) once the request has used up its time budget."""
        self.seconds += seconds
        if self.seconds > self.max_seconds:
            raise PayloadTooLarge(
                "Decoding and preparing this request's images took more than "
                f"{self.max_seconds:g} s of CPU; send fewer or smaller images per request.",
                limit_decode_seconds=self.max_seconds,
            )


_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}
_heap_tuned = False
# glibc mallopt parameter: fixed mmap threshold (a fixed value also turns off its dynamic
# raising, which is what keeps freed decode buffers inside per-thread arenas).
_M_MMAP_THRESHOLD: Final = -3
_MMAP_THRESHOLD_BYTES: Final = 4 * 1024 * 1024


def return_large_buffers_to_the_os() -> bool:
    """Serve allocations of 4 MB and more with mmap so that they go back to the OS when
    freed. Decoded images are 10-160 MB; with glibc's default dynamic threshold, freed ones
    stay in the arena of whichever worker thread decoded them (measured: a 40 MP RGBA PNG
    decoded in 6 threads in turn left 233 MB resident; 62 MB with this). No-op off glibc or
    when MALLOC_MMAP_THRESHOLD_ is set. Returns whether the setting was applied."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def slot_count(configured: int) -> int:
    """Decodes allowed at once: the setting, or one per CPU core when it is 0."""
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


@contextmanager
def decode_slot(configured: int) -> Iterator[None]:
    """Hold one of the process-wide decode slots (however many threads the server runs), so
    at most N full-size images are in memory and on the CPU at once."""
    global _heap_tuned
    size = slot_count(configured)
    with _slots_lock:
        sem = _slots.setdefault(size, threading.BoundedSemaphore(size))
        if not _heap_tuned:
            _heap_tuned = True
            logger.debug("large buffers via mmap: %s", return_large_buffers_to_the_os())
    if not sem.acquire(timeout=SLOT_WAIT_S):
        raise NotReady(
            f"The server is busy decoding other images (waited {SLOT_WAIT_S:g} s); retry shortly."
        )
    try:
        yield
    finally:
        sem.release()


@contextmanager
def timed(budget: DecodeBudget) -> Iterator[None]:
    """Charge the block's CPU time (this thread's: the decoders run in it) to the budget,
    checked when the block ends. Wall time also counted the waits of a contended machine: a
    batch that decodes in 1.2 s was refused after 7.3 s under load, a 413 for a 503's cause."""
    t0 = time.thread_time()
    try:
        yield
    finally:
        budget.seconds += time.thread_time() - t0
    budget.spend(0.0)
