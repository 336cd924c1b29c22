"""Pictures within the pixel limit that a worker once decoded whole, at 100-1,150 MiB each
(round 35): TIFF pages, a PNG with image data after its pixels, thin giants for models other
than imagenet, progressive JPEG, interlaced PNG and lossless WebP; lossless JPEG, answered
"damaged" until round 36. Now decoded by bands or reduced, or refused by their own limits
(app/image_limits.py) before decoding."""

from __future__ import annotations

import io
import struct
import zlib
from functools import partial

import numpy as np
from PIL import Image

from tests.app.hostile.base import Case, mk
from tests.images import big_png, encode, png_chunk, tiff_with_private_tags
from tests.lossless_jpeg import lossless_jpeg


def blocks(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Flat blocks of random colours, 250 px each: compresses well, as drawings do."""
    rng = np.random.default_rng(35)
    small = rng.integers(0, 8, (-(-height // 250), -(-width // 250), 3), dtype=np.uint8) * 32
    img = Image.fromarray(small).resize((small.shape[1] * 250, small.shape[0] * 250), 0)
    return img.crop((0, 0, width, height)).convert(mode)


def png_with_stray_image_data() -> bytes:
    """A 16-bit 8000x5000 PNG, then a text chunk and another IDAT (Pillow ignores it)."""
    png = big_png(8000, 5000, mode="L", bits=16)
    stray = png_chunk(b"tEXt", b"a\x00b") + png_chunk(b"IDAT", zlib.compress(bytes(99)))
    return png[:-12] + stray + png[-12:]


def interlaced_png(width: int, height: int) -> bytes:
    """An RGB PNG in Adam7's seven passes (Pillow writes none): a horizontal ramp."""
    ramp = np.repeat(np.linspace(0, 255, width).astype(np.uint8)[:, None], 3, axis=1)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    deflate, parts = zlib.compressobj(9), []
    for x0, y0, dx, dy in [*passes, (0, 1, 1, 2)]:
        row = b"\x00" + ramp[x0::dx].tobytes()
        parts += [deflate.compress(row) for _ in range(y0, height, dy)]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    idat = b"".join([*parts, deflate.flush()])
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def whole_decodes() -> list[Case]:
    big = (8000, 5000)
    return [
        mk(
            "tiff-40mp-lzw-strips",
            "memory",
            "imagenet",
            lambda: encode(blocks(*big), "TIFF", compression="tiff_lzw"),
            "ok",
            slow=True,
        ),
        mk(
            "tiff-40mp-one-lzw-strip",
            "memory",
            "imagenet",
            lambda: encode(blocks(*big), "TIFF", compression="tiff_lzw", tiffinfo={278: 5000}),
            "reject",
            (413,),
            slow=True,
        ),
        mk(
            "tiff-300-tags-on-4mb",  # libtiff read each: 1,156 MiB for this 4 MB file
            "bomb",
            "imagenet",
            lambda: tiff_with_private_tags(300, 4_000_000, shared=True),
            "reject",
            (413,),
        ),
        mk(
            "jpeg-progressive-444-40mp",
            "memory",
            "imagenet",
            lambda: encode(blocks(*big), "JPEG", progressive=True, subsampling=0),
            "reject",
            (413,),
            slow=True,
        ),
        mk(
            "jpeg-progressive-420-26mp",
            "memory",
            "bird",
            lambda: encode(blocks(6000, 4300), "JPEG", progressive=True, subsampling=2),
            "ok",
            slow=True,
        ),
        mk(
            "png-interlaced-40mp-rgb",
            "memory",
            "imagenet",
            lambda: interlaced_png(7000, 5700),
            "reject",
            (413,),
            slow=True,
        ),
        mk(
            "webp-lossless-39mp",
            "memory",
            "imagenet",
            lambda: encode(blocks(7000, 5600), "WEBP", lossless=True, method=0),
            "reject",
            (413,),
            slow=True,
        ),
        mk(
            "png16-stray-idat-40mp",
            "memory",
            "imagenet",
            png_with_stray_image_data,
            "ok",
            slow=True,
        ),
        mk(
            "png-100x400000-santa",
            "memory",
            "santa",
            lambda: big_png(100, 400_000, mode="RGB"),
            "ok",
            slow=True,
        ),
        mk(
            "png-400000x100-digits",
            "memory",
            "digits",
            lambda: big_png(400_000, 100, mode="RGBA"),
            "ok",
            slow=True,
        ),
        mk(
            "png-100x400000-products",
            "memory",
            "products",
            lambda: big_png(100, 400_000, mode="L"),
            "ok",
            slow=True,
        ),
        mk(
            "jpeg-lossless-11mp-rgb",  # at its limit: decoded at full size, +51 MiB
            "memory",
            "bird",
            lambda: lossless_jpeg(np.asarray(blocks(4000, 2785))),
            "ok",
            slow=True,
        ),
        mk(
            "jpeg-lossless-claims-40mp-gray",
            "memory",
            "imagenet",
            lambda: lossless_jpeg(np.zeros((8, 8), np.uint8), width=8000, height=5000),
            "reject",
            (413,),
        ),
        mk(
            "jpeg-65500x610-orient6-bird",  # decoded whole, then turned: +306 MiB (round 36)
            "memory",
            "bird",
            lambda: _oriented(encode(blocks(65500, 610), "JPEG", quality=85)),
            "ok",
            slow=True,
        ),
        mk(
            "gif-65500x600-santa",  # a 40 MB palette picture made RGB at full size
            "memory",
            "santa",
            lambda: encode(blocks(65500, 600, "P"), "GIF"),
            "ok",
            slow=True,
        ),
        mk(
            "jpeg-12-bit",
            "valid",
            "imagenet",
            lambda: _twelve_bit(encode(blocks(64, 64), "JPEG")),
            "reject",
            (415,),
        ),
        *(
            mk(name, "valid", "imagenet", partial(_process, marker), "reject", (415,))
            for name, marker in (("jpeg-ls-frame", 0xF7), ("jpeg-hierarchical-sof5", 0xC5))
        ),
        mk("bmp-holding-a-png", "valid", "imagenet", _bmp_holding_png, "reject", (415,)),
    ]


def _oriented(jpeg: bytes) -> bytes:
    """The JPEG with an EXIF orientation of 6 (turned a quarter to be upright)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(io.BytesIO(jpeg)) as img:
        return encode(img, "JPEG", quality=85, exif=exif.tobytes())


def _twelve_bit(jpeg: bytes) -> bytes:
    """The frame header says 12 bits a sample (Pillow reads 8-bit JPEGs only)."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 4] + b"\x0c" + jpeg[sof + 5 :]


def _process(marker: int) -> bytes:
    """A JPEG whose frame header names another coding process (JPEG-LS, hierarchical)."""
    jpeg = encode(blocks(64, 64), "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof] + bytes([0xFF, marker]) + jpeg[sof + 2 :]


def _bmp_holding_png() -> bytes:
    """A BMP whose pixels are a PNG stream (BI_PNG, compression 5: a printer format)."""
    png = encode(blocks(64, 64), "PNG")
    head = bytearray(encode(blocks(64, 64), "BMP")[:54])
    struct.pack_into("<I", head, 2, 54 + len(png))
    struct.pack_into("<II", head, 30, 5, len(png))
    struct.pack_into("<H", head, 28, 0)  # bits a pixel: 0, as BI_PNG says (round 37's attack)
    return bytes(head) + png
