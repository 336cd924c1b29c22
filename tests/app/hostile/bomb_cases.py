"""CPU, memory and decompression bombs: progressive scans, pages, frames, huge headers,
zlib bombs, and files made of millions of tiny records."""

from __future__ import annotations

import functools
import struct

from PIL import Image, ImageDraw

from tests.app.hostile.base import (
    Case,
    digit,
    mk,
    photo,
    photo_jpeg,
    valid_files,
)
from tests.images import (
    avif_with_size,
    big_avif,
    big_avif_flat,
    big_png,
    bmp_rle8_runs,
    bmp_with_size,
    encode,
    gif_with_size,
    heic,
    heic_grid,
    heic_with_size,
    jpeg_with_size,
    long_,
    many_page_tiff,
    png_chunk,
    png_with_header,
    repeat_last_scan,
    short,
    tiff_ifd_bytes,
    tiff_one_row_strips,
)


def progressive_bomb(scans: int, side: int = 4000) -> bytes:
    """A flat gray progressive JPEG with its last (AC refinement) scan repeated: each repeat
    is a few bytes, and costs the decoder a pass over every block of the image."""
    img = Image.new("L", (side, side), 128)
    return repeat_last_scan(encode(img, "JPEG", quality=75, progressive=True), scans)


def gif_many_frames(frames: int) -> bytes:
    """An animated GIF of `frames` 1x1 frames on an 8x8 screen (about 20 bytes a frame)."""
    head = b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = (
        b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms
        + b","
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"
    )
    return head + frame * frames + b";"


def webp_with_canvas(width: int, height: int) -> bytes:
    """A WebP whose VP8X canvas claims any size (24-bit fields), around a tiny lossless frame."""
    tiny = encode(Image.new("RGB", (8, 8), (200, 30, 30)), "WEBP", lossless=True)
    vp8l = tiny[12:]  # the VP8L chunk of a simple-format file
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_with_size(width: int, height: int) -> bytes:
    entries = [
        (256, 4, 1, long_(width)),
        (257, 4, 1, long_(height)),
        (258, 3, 1, short(8)),
        (259, 3, 1, short(1)),
        (262, 3, 1, short(1)),
        (273, 4, 1, long_(8)),
        (278, 4, 1, long_(height)),
        (279, 4, 1, long_(64)),
    ]
    return tiff_ifd_bytes(entries) + b"\x00" * 64


def png_text_bomb(kind: bytes) -> bytes:
    payload = zlib_bomb(64 * 1024 * 1024)
    if kind == b"zTXt":
        chunk = png_chunk(b"zTXt", b"Comment\x00\x00" + payload)
    else:
        chunk = png_chunk(b"iCCP", b"icc\x00\x00" + payload)
    png = encode(photo(), "PNG")
    return png[:33] + chunk + png[33:]


def zlib_bomb(size: int) -> bytes:
    import zlib

    comp = zlib.compressobj(9)
    block = b"\x00" * (1 << 20)
    return b"".join(comp.compress(block) for _ in range(size >> 20)) + comp.flush()


def thin_line(width: int, height: int, mode: str) -> bytes:
    """A long thin white picture with a dark line along most of its length."""
    img = Image.new(mode, (width, height), "white")
    ImageDraw.Draw(img).line([(width // 20, height // 2), (width * 19 // 20, height // 2)], 0)
    return encode(img, "PNG")


def cpu_and_memory() -> list[Case]:
    return [
        # Long thin pictures within the pixel limit: center_crop used to scale the whole
        # 400000x100 picture to 896000x224 (1.3 GB) and trim to centre the line in a square
        # of its length (test_imaging_hardening has the 4,000,000-px versions).
        # 1.5 s each: full runs only (the fast subset keeps the gray twin in
        # test_imaging_hardening.py::test_long_thin_pictures_cost_their_own_size)
        mk(
            "png-400000x100",
            "memory",
            "imagenet",
            lambda: big_png(400_000, 100, mode="RGB"),
            "ok",
            slow=True,
        ),
        mk(
            "png-100x400000",
            "memory",
            "imagenet",
            lambda: big_png(100, 400_000, mode="RGB"),
            "ok",
            slow=True,
        ),
        mk("png-line-40000x10", "memory", "products", lambda: thin_line(40_000, 10, "L"), "ok"),
        mk(
            "jpeg-progressive-1500-scans",
            "cpu",
            "imagenet",
            lambda: progressive_bomb(1500),
            "reject",
            (413, 422),
        ),
        mk(
            "jpeg-progressive-300-scans",
            "cpu",
            "imagenet",
            lambda: progressive_bomb(300, 2000),
            "reject",
            (413, 422),
        ),
        mk("tiff-40000-pages", "cpu", "imagenet", lambda: many_page_tiff(40_000), "ok"),
        mk("gif-50000-frames", "cpu", "imagenet", lambda: gif_many_frames(50_000), "ok"),
        mk(
            "batch-32x40mp-rgba",
            "cpu",
            "imagenet",
            lambda: [big_png(7000, 5700, mode="RGBA")] * 32,
            "reject",
            (413,),
            slow=True,
        ),
        mk(
            "png-40mp-rgba",
            "memory",
            "imagenet",
            lambda: big_png(7000, 5700, mode="RGBA"),
            "ok",
            slow=True,
        ),
        mk(
            "png16-gray-8000x5000",
            "memory",
            "imagenet",
            lambda: big_png(8000, 5000, mode="L", bits=16),
            "ok",
            slow=True,
        ),
        mk(
            "png16-rgba-4000x3000",
            "memory",
            "imagenet",
            lambda: big_png(4000, 3000, mode="RGBA", bits=16),
            "ok",
        ),
        mk("avif-12.5mp", "memory", "imagenet", lambda: big_avif(4080, 3072), "ok", slow=True),
        mk(
            "webp-animated-6000x6000",  # composed on full canvases: 1 GB for the tree
            "bomb",
            "imagenet",
            lambda: encode(
                Image.new("RGB", (6000, 6000), (200, 30, 30)),
                "WEBP",
                save_all=True,
                append_images=[Image.new("RGB", (6000, 6000), (30, 200, 30))],
                quality=50,
            ),
            "reject",
            (413,),
            slow=True,  # 4 s to encode: full runs (test_image_limits.py keeps a small one fast)
        ),
        mk(
            "avif-frame-16384-declares-1000",  # libavif decoded the coded frame whole
            "bomb",
            "imagenet",
            lambda: avif_with_size(big_avif_flat(16384), 1000, 1000),
            "reject",
            (413,),
            slow=True,  # coding 268 MP takes 14 s
        ),
        mk(
            "avif-declares-40000x40000",
            "bomb",
            "imagenet",
            lambda: avif_with_size(valid_files()["AVIF"], 40_000, 40_000),
            "reject",
            (413,),
        ),
        mk(
            "heic-grid-canvas-40000x40000",  # a few KB; libheif would allocate the canvas whole
            "bomb",
            "imagenet",
            lambda: heic_grid(heic(Image.new("RGB", (64, 64), (9, 99, 9))), 1, 1, (40_000, 40_000)),
            "reject",
            (413,),
        ),
        mk(
            "heic-coded-4096x4096-declares-64",  # the HEVC data codes 16.8 MP; ispe says 64x64
            "bomb",
            "imagenet",
            lambda: heic_with_size(heic(Image.new("RGB", (4096, 4096), (9, 99, 9))), 64, 64),
            "reject",
            (413,),
            slow=True,  # 2.4 s to encode: test_heif.py keeps a small one fast
        ),
        mk(
            "png-zero-idat-6000x6000",
            "memory",
            "digits",
            lambda: big_png(6000, 6000, mode="L"),
            "ok",
        ),
    ]


def structure_bomb(fmt: str, size: int = 4 << 20) -> bytes:
    """Valid-looking files made of a huge number of tiny records, each of which a reader
    parses one by one: empty JPEG APP5 segments, PNG text chunks or empty IDAT chunks, GIF
    comment sub-blocks before the first image."""
    if fmt == "JPEG":
        j = photo_jpeg()
        return j[:2] + b"\xff\xe5\x00\x02" * (size // 4) + j[2:]
    if fmt in ("PNG-TEXT", "PNG-IDAT"):
        png = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
        chunk = png_chunk(b"tEXt", b"a\x00b") if fmt == "PNG-TEXT" else png_chunk(b"IDAT", b"")
        return png[:33] + chunk * (size // len(chunk)) + png[33:]
    return gif_with_comment(size // 2)


def gif_with_comment(subblocks: int) -> bytes:
    """The digit as a GIF, with a comment extension of `subblocks` one-byte sub-blocks
    before its image."""
    gif = encode(digit(), "GIF")
    flags = gif[10]
    start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    return gif[:start] + b"\x21\xfe" + b"\x01a" * subblocks + b"\x00" + gif[start:]


def structures() -> list[Case]:
    c = functools.partial(Case, group="cpu", model="imagenet", expect="reject", statuses=(413,))
    return [
        c("jpeg-million-empty-segments", lambda: structure_bomb("JPEG")),
        c("png-300k-text-chunks", lambda: structure_bomb("PNG-TEXT")),
        c("png-350k-empty-idat-chunks", lambda: structure_bomb("PNG-IDAT")),
        c("gif-2m-comment-subblocks", lambda: structure_bomb("GIF")),
        c("tiff-600k-one-row-strips", lambda: tiff_one_row_strips(8, 600_000)),
        c("bmp-rle8-2m-runs", lambda: bmp_rle8_runs(4000, 2500, 2_000_000)),
        mk("bmp-rle8-small", "valid", "imagenet", lambda: bmp_rle8_runs(64, 64, 4096), "ok"),
        mk(
            "gif-5000-comment-subblocks", "valid", "digits", lambda: gif_with_comment(5000), "photo"
        ),
    ]


def huge_headers() -> list[Case]:
    c = functools.partial(Case, group="bomb", model="imagenet", expect="reject", statuses=(413,))
    return [
        c("png-header-100000x100000", lambda: png_with_header(100_000, 100_000)),
        c("png-header-just-over-limit", lambda: png_with_header(40_001, 1000)),
        c("jpeg-header-65000x65000", lambda: jpeg_with_size(photo_jpeg(), 65000, 65000)),
        c("gif-header-65535x65535", lambda: gif_with_size(65535, 65535)),
        c("bmp-header-50000x50000", lambda: bmp_with_size(50_000, 50_000)),
        c("bmp-header-negative-height", lambda: bmp_with_size(50_000, -50_000)),
        c("tiff-header-100000x100000", lambda: tiff_with_size(100_000, 100_000)),
        c("webp-canvas-16384x16384", lambda: webp_with_canvas(16384, 16384)),
        mk(
            "png-ztxt-bomb",
            "bomb",
            "imagenet",
            lambda: png_text_bomb(b"zTXt"),
            "reject",
            (413,),
        ),
        mk(
            "png-iccp-bomb",
            "bomb",
            "imagenet",
            lambda: png_text_bomb(b"iCCP"),
            "reject",
            (413,),
        ),
    ]
