"""The hostile-input corpus, generated in code: crafted EXIF, CPU and memory bombs, huge
headers, truncated and corrupt files of every format, polyglots, non-images, and the
odd-but-valid images every user has. Shared by the HTTP tests and bench/peak_memory.py."""

from __future__ import annotations

import functools
import io
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from tests.images import (
    big_png,
    bmp_rle8_runs,
    bmp_with_size,
    encode,
    exif_payload,
    gif_with_size,
    jpeg_with_size,
    long_,
    many_page_tiff,
    orientation_entry,
    png_chunk,
    png_with_exif_chunk,
    png_with_header,
    repeat_last_scan,
    short,
    tiff_ifd_bytes,
    tiff_one_row_strips,
)

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("IMGCLASS_DATA", ROOT / "data"))
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


def _exif_cases() -> list[Case]:
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


def _orientation_cases() -> list[Case]:
    def make(o: int) -> Callable[[], bytes]:
        return lambda: jpeg_exif([orientation_entry(o)], orientation=o)

    return [mk(f"exif-orientation-{o}", "valid", "imagenet", make(o), "photo") for o in range(1, 9)]


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


def _cpu_memory_cases() -> list[Case]:
    return [
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


def _structure_cases() -> list[Case]:
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


def _bomb_cases() -> list[Case]:
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
    }


def _damaged_cases() -> list[Case]:
    out: list[Case] = []
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        f = fmt.lower()
        # Cut in half: libjpeg/libwebp/GIF readers stop at the cut; we refuse rather than
        # classify a half-grey picture.
        out.append(
            mk(
                f"{f}-truncated-half",
                "damaged",
                "imagenet",
                functools.partial(_cut, fmt, 0.5),
                "reject",
                (422,),
            )
        )
        out.append(
            mk(
                f"{f}-header-only",
                "damaged",
                "imagenet",
                functools.partial(_cut, fmt, 40),
                "reject",
                (422,),
            )
        )
        out.append(
            mk(
                f"{f}-garbage-after-magic",
                "damaged",
                "imagenet",
                functools.partial(_garbage, fmt),
                "reject",
                (422,),
            )
        )
    out += [
        mk("png-bad-crc", "damaged", "imagenet", _bad_crc, "reject", (422,)),
        mk("jpeg-noise-in-scan", "damaged", "imagenet", _noisy_jpeg, "ok"),
        mk("jpeg-soi-only", "damaged", "imagenet", lambda: b"\xff\xd8\xff", "reject", (422,)),
        mk(
            "png-signature-only",
            "damaged",
            "imagenet",
            lambda: b"\x89PNG\r\n\x1a\n",
            "reject",
            (422,),
        ),
        mk("tiff-ifd-loop", "damaged", "imagenet", _tiff_loop, "ok"),
    ]
    return out


def _cut(fmt: str, keep: float) -> bytes:
    data = valid_files()[fmt]
    n = int(len(data) * keep) if keep < 1 else int(keep)
    return data[:n]


def _garbage(fmt: str) -> bytes:
    data = valid_files()[fmt]
    magic = {"JPEG": 3, "PNG": 8, "GIF": 6, "WEBP": 12, "BMP": 2, "TIFF": 4}[fmt]
    rng = np.random.default_rng(len(fmt))
    return data[:magic] + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _bad_crc() -> bytes:
    data = bytearray(valid_files()["PNG"])
    data[29] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def _noisy_jpeg() -> bytes:
    data = bytearray(photo_jpeg())
    rng = np.random.default_rng(1)
    mid = len(data) // 2
    data[mid : mid + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    return bytes(data)


def _tiff_loop() -> bytes:
    data = bytearray(many_page_tiff(2))
    # Point the second IFD's next-IFD field back at the first IFD.
    first = struct.unpack("<I", data[4:8])[0]
    second = first + 2 + 8 * 12 + 4
    data[second + 2 + 8 * 12 : second + 2 + 8 * 12 + 4] = struct.pack("<I", first)
    return bytes(data)


def _polyglot_cases() -> list[Case]:
    def zip_bytes() -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("payload.txt", "hello" * 100)
        return buf.getvalue()

    png = lambda: valid_files()["PNG"]  # noqa: E731
    return [
        mk("jpeg-plus-zip", "polyglot", "imagenet", lambda: photo_jpeg() + zip_bytes(), "photo"),
        mk(
            "png-plus-html",
            "polyglot",
            "imagenet",
            lambda: png() + b"<html><script>alert(1)</script>",
            "photo",
        ),
        mk(
            "gif-js-polyglot",
            "polyglot",
            "imagenet",
            lambda: encode(photo().resize((64, 64)), "GIF") + b"*/=1;alert(1);/*",
            "ok",
        ),
        mk(
            "html-then-png",
            "polyglot",
            "imagenet",
            lambda: b"<html><body>" + png(),
            "reject",
            (415,),
        ),
        mk(
            "pdf-with-jpeg",
            "polyglot",
            "imagenet",
            lambda: b"%PDF-1.4\n" + photo_jpeg(),
            "reject",
            (415,),
        ),
        mk(
            "svg-with-embedded-png",
            "polyglot",
            "imagenet",
            lambda: (
                b'<svg xmlns="http://www.w3.org/2000/svg"><image href="data:image/png;base64,AAAA"/></svg>'
            ),
            "reject",
            (415,),
        ),
        mk(
            "zip-then-jpeg",
            "polyglot",
            "imagenet",
            lambda: zip_bytes() + photo_jpeg(),
            "reject",
            (415,),
        ),
    ]


def _not_image_cases() -> list[Case]:
    items: dict[str, bytes] = {
        "text": b"hello, world\n" * 10,
        "html": b"<!doctype html><html><body>hi</body></html>",
        "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "pdf": b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "json": b'{"image": "not really"}',
        "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 100,
        "gzip": b"\x1f\x8b\x08\x00" + b"\x00" * 100,
        "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
        "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64,
        "ico": b"\x00\x00\x01\x00\x01\x00\x10\x10" + b"\x00" * 100,
        "utf16-text": "hello world".encode("utf-16"),
        "all-0xff": b"\xff" * 1000,
    }
    out = [
        mk(f"not-image-{k}", "not-image", "imagenet", functools.partial(bytes, v), "reject", (415,))
        for k, v in items.items()
    ]
    out.append(mk("zero-bytes", "not-image", "imagenet", lambda: b"", "reject", (400, 422)))
    out.append(mk("one-byte", "not-image", "imagenet", lambda: b"\xff", "reject", (415,)))
    return out


def _digit16() -> np.ndarray:
    return np.asarray(digit(), dtype=np.uint16) * 257


def _odd_valid_cases() -> list[Case]:
    p = photo
    c = functools.partial(Case, group="valid", model="imagenet", expect="photo")
    d = functools.partial(Case, group="valid", model="digits", expect="photo")

    def palette_alpha() -> bytes:
        pal = p().convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
        return encode(pal, "PNG", transparency=254)

    def rgba() -> bytes:
        im = p().convert("RGBA")
        im.putalpha(Image.new("L", im.size, 255))
        return encode(im, "PNG")

    def animated(fmt: str) -> bytes:
        frames = [
            p(),
            Image.new("RGB", p().size, (0, 0, 0)),
            Image.new("RGB", p().size, (255, 0, 0)),
        ]
        kw: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": 80}
        if fmt == "WEBP":
            kw["quality"] = 85
        return encode(frames[0], fmt, **kw)

    def multipage_tiff() -> bytes:
        pages = [p(), Image.new("RGB", (64, 64)), Image.new("L", (32, 32))]
        return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])

    def apng() -> bytes:
        return encode(p(), "PNG", save_all=True, append_images=[Image.new("RGB", p().size)])

    def i16b_tiff() -> bytes:
        arr = _digit16().astype(">u2")
        raw = tiff_ifd_bytes(
            [
                (256, 3, 1, struct.pack(">H", 28)),
                (257, 3, 1, struct.pack(">H", 28)),
                (258, 3, 1, struct.pack(">H", 16)),
                (259, 3, 1, struct.pack(">H", 1)),
                (262, 3, 1, struct.pack(">H", 1)),
                (273, 4, 1, struct.pack(">I", 0)),  # patched below
                (278, 3, 1, struct.pack(">H", 28)),
                (279, 4, 1, struct.pack(">I", arr.nbytes)),
            ],
            little=False,
        )
        off = len(raw)
        raw = raw.replace(
            struct.pack(">HHI", 273, 4, 1) + b"\x00" * 4, struct.pack(">HHII", 273, 4, 1, off)
        )
        return raw + arr.tobytes()

    return [
        c("jpeg-cmyk", lambda: encode(p().convert("CMYK"), "JPEG", quality=90)),
        c("jpeg-progressive", lambda: encode(p(), "JPEG", quality=90, progressive=True)),
        c("jpeg-gray", lambda: encode(p().convert("L"), "JPEG", quality=90), expect="ok"),
        c("jpeg-with-icc", lambda: encode(p(), "JPEG", quality=90, icc_profile=b"\x00" * 128)),
        c("jpeg-large-12mp", lambda: encode(p().resize((4000, 3000)), "JPEG", quality=85)),
        c("png-palette-alpha", palette_alpha),
        c("png-rgba", rgba),
        c("png-16bit-rgb", lambda: big_png(640, 480, mode="RGB", bits=16), expect="ok"),
        c("png-apng", apng),
        c("gif-animated", lambda: animated("GIF")),
        c("webp-animated", lambda: animated("WEBP")),
        c("webp-lossless", lambda: encode(p(), "WEBP", lossless=True)),
        c("webp-lossy", lambda: encode(p(), "WEBP", quality=80)),
        c("tiff-multipage", multipage_tiff),
        c("tiff-lzw", lambda: encode(p(), "TIFF", compression="tiff_lzw")),
        c("tiff-cmyk", lambda: encode(p().convert("CMYK"), "TIFF")),
        c("bmp-rgb", lambda: encode(p(), "BMP")),
        d("png-16bit-gray", lambda: encode(Image.fromarray(_digit16()), "PNG")),
        d("png-la", lambda: encode(digit().convert("LA"), "PNG")),
        d(
            "png-1bit",
            lambda: encode(digit().point(lambda v: 255 if v > 100 else 0).convert("1"), "PNG"),
        ),
        d(
            "tiff-1bit",
            lambda: encode(digit().point(lambda v: 255 if v > 100 else 0).convert("1"), "TIFF"),
        ),
        d("tiff-i16b", i16b_tiff),
        d(
            "tiff-float",
            lambda: encode(Image.fromarray(np.asarray(digit(), np.float32) / 255.0, "F"), "TIFF"),
        ),
        d("png-gray", lambda: encode(digit(), "PNG")),
        d(
            "jpeg-digit-on-paper",
            lambda: encode(Image.fromarray(255 - np.asarray(digit())), "JPEG", quality=95),
        ),
        d("gif-digit", lambda: encode(digit(), "GIF")),
    ]


CASES: list[Case] = [
    *_exif_cases(),
    *_orientation_cases(),
    *_cpu_memory_cases(),
    *_bomb_cases(),
    *_structure_cases(),
    *_damaged_cases(),
    *_polyglot_cases(),
    *_not_image_cases(),
    *_odd_valid_cases(),
]
