"""Damaged files of every format, polyglots, non-images, and the odd-but-valid images every
user has."""

from __future__ import annotations

import functools
import io
import struct
import zipfile

import numpy as np
from PIL import Image

from tests.app.hostile.base import (
    Case,
    digit,
    mk,
    photo,
    photo_jpeg,
    valid_files,
)
from tests.images import (
    big_png,
    encode,
    heic,
    heic_grid,
    many_page_tiff,
    tiff_ifd_bytes,
)


def damaged() -> list[Case]:
    out: list[Case] = []
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF"):
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
    magic = {
        "JPEG": 3,
        "PNG": 8,
        "GIF": 6,
        "WEBP": 12,
        "BMP": 2,
        "TIFF": 4,
        "AVIF": 32,
        "HEIF": 32,
    }[fmt]
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


def polyglots() -> list[Case]:
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


def not_images() -> list[Case]:
    items: dict[str, bytes] = {
        "text": b"hello, world\n" * 10,
        "html": b"<!doctype html><html><body>hi</body></html>",
        "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "pdf": b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "json": b'{"image": "not really"}',
        "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 100,
        "gzip": b"\x1f\x8b\x08\x00" + b"\x00" * 100,
        "ico": b"\x00\x00\x01\x00\x01\x00\x10\x10" + b"\x00" * 100,
        "utf16-text": "hello world".encode("utf-16"),
        "all-0xff": b"\xff" * 1000,
    }
    out = [
        mk(f"not-image-{k}", "not-image", "imagenet", functools.partial(bytes, v), "reject", (415,))
        for k, v in items.items()
    ]
    out.append(
        mk("avif-animated", "not-image", "imagenet", _animated_avif, "reject", (415,))
    )  # an image sequence: its frames' sizes are in a track, not checked before decoding
    out.append(mk("heif-sequence", "not-image", "imagenet", _heif_sequence, "reject", (415,)))
    out.append(mk("zero-bytes", "not-image", "imagenet", lambda: b"", "reject", (400, 422)))
    out.append(mk("one-byte", "not-image", "imagenet", lambda: b"\xff", "reject", (415,)))
    return out


def _heif_sequence() -> bytes:
    return heic(photo()).replace(b"heic", b"hevc").replace(b"mif1", b"msf1")


def _animated_avif() -> bytes:
    frames = [photo(), Image.new("RGB", photo().size)]
    return encode(frames[0], "AVIF", save_all=True, append_images=frames[1:], speed=8)


def _digit16() -> np.ndarray:
    return np.asarray(digit(), dtype=np.uint16) * 257


def odd_but_valid() -> list[Case]:
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
        if fmt in ("WEBP", "AVIF"):
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
        c("avif-lossy", lambda: encode(p(), "AVIF", quality=75, speed=8)),
        c("avif-alpha", lambda: encode(p().convert("RGBA"), "AVIF", quality=75, speed=8)),
        c("heic-photo", lambda: heic(p(), quality=80)),
        c(
            "heic-grid",
            lambda: heic_grid(heic(p().resize((256, 256))), 2, 2, (512, 512)),
            expect="ok",
        ),
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
        # the smallest valid pictures are classified (IMGCLASS_MIN_IMAGE_SIDE defaults to 1)
        c("gif-1x1-tracking-pixel", lambda: encode(Image.new("P", (1, 1), 0), "GIF"), expect="ok"),
        c("png-1x1-transparent", lambda: _tiny("RGBA", (1, 1), (0, 0, 0, 0)), expect="ok"),
        c("jpeg-2x1", lambda: encode(Image.new("RGB", (2, 1), (9, 99, 199)), "JPEG"), expect="ok"),
        c("png-1x3000-rule", lambda: _tiny("L", (1, 3000), 0), expect="ok", model="products"),
        c("webp-1x1", lambda: _tiny("RGB", (1, 1), (250, 9, 9), "WEBP"), expect="ok", model="bird"),
    ]


def _tiny(
    mode: str, size: tuple[int, int], fill: float | tuple[int, ...], fmt: str = "PNG"
) -> bytes:
    return encode(Image.new(mode, size, fill), fmt)
