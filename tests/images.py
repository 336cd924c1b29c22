"""Build test images (real photos re-encoded, edge cases crafted byte by byte)."""

from __future__ import annotations

import contextlib
import io
import itertools
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@contextlib.contextmanager
def loaded_sizes() -> Iterator[list[tuple[int, int]]]:
    """The sizes of the images Pillow decodes inside the block (ImageFile.load calls)."""
    sizes: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        sizes.append(self.size)
        return real(self)

    ImageFile.ImageFile.load = spy  # type: ignore[method-assign,assignment]
    try:
        yield sizes
    finally:
        ImageFile.ImageFile.load = real  # type: ignore[method-assign]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_with_header(width: int, height: int) -> bytes:
    """A syntactically valid PNG header claiming any dimensions, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def fashion_png(x: np.ndarray) -> bytes:
    """A 28x28 gray test-split image as PNG bytes."""
    return encode(Image.fromarray(np.asarray(x).squeeze().astype(np.uint8), mode="L"), "PNG")


def rectangles(n: int, seed: int = 0) -> np.ndarray:
    """Coloured rectangles on white: n x 224 x 224 x 3 float32 RGB in 0..255 (a bundle's pixel
    range), for tests that feed a backbone pictures without decoding files."""
    rng = np.random.default_rng(seed)
    x = np.full((n, 224, 224, 3), 255.0, np.float32)
    for k in range(n):
        y0, x0 = rng.integers(0, 150, 2)
        h, w = rng.integers(20, 74, 2)
        x[k, y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 255, 3)
    return x


def photo(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


# --- Crafted containers for the hostile-input suite (all generated, nothing committed) ---

# TIFF/EXIF field types: 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL, 7 UNDEFINED,
# 8 SSHORT, 9 SLONG, 10 SRATIONAL, 11 FLOAT, 12 DOUBLE.
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


def tiff_ifd_bytes(entries: list[tuple[int, int, int, bytes]], *, little: bool = True) -> bytes:
    """A TIFF structure (header + one IFD) with entries written exactly as given:
    (tag, field type, count, raw value bytes). Nothing is checked, so any type confusion can
    be expressed. Values over 4 bytes go after the IFD."""
    bo = "<" if little else ">"
    head = (b"II*\x00" if little else b"MM\x00*") + struct.pack(bo + "I", 8)
    ifd_size = 2 + 12 * len(entries) + 4
    extra = b""
    body = struct.pack(bo + "H", len(entries))
    for tag, kind, count, raw in sorted(entries, key=lambda e: e[0]):
        if len(raw) <= 4:
            body += struct.pack(bo + "HHI", tag, kind, count) + raw.ljust(4, b"\x00")
        else:
            offset = 8 + ifd_size + len(extra)
            body += struct.pack(bo + "HHII", tag, kind, count, offset)
            extra += raw + (b"\x00" if len(raw) % 2 else b"")
    return head + body + struct.pack(bo + "I", 0) + extra


def exif_payload(entries: list[tuple[int, int, int, bytes]], *, little: bool = True) -> bytes:
    """EXIF as stored in a JPEG APP1 / WebP EXIF chunk: 'Exif\\0\\0' + a TIFF structure."""
    return b"Exif\x00\x00" + tiff_ifd_bytes(entries, little=little)


def short(v: int, signed: bool = False) -> bytes:
    return struct.pack("<h" if signed else "<H", v)


def long_(v: int, signed: bool = False) -> bytes:
    return struct.pack("<i" if signed else "<I", v)


def orientation_entry(value: int) -> tuple[int, int, int, bytes]:
    return (0x0112, 3, 1, short(value))


def png_with_exif_chunk(png: bytes, tiff: bytes) -> bytes:
    """Insert an eXIf chunk (raw TIFF structure) right after IHDR."""
    end_ihdr = 8 + 8 + 13 + 4
    return png[:end_ihdr] + png_chunk(b"eXIf", tiff) + png[end_ihdr:]


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a baseline/progressive JPEG; an SOS segment's
    end includes its entropy-coded data."""
    out: list[tuple[int, int, int]] = []
    pos = 2
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if marker == 0xDA:
            while True:  # entropy data ends at the first 0xFF not followed by 00 or RSTn
                end = data.index(b"\xff", end)
                nxt = data[end + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, pos, end))
        pos = end
    return out


def repeat_last_scan(progressive: bytes, times: int) -> bytes:
    """A progressive JPEG whose last scan is repeated `times` more times: valid syntax, cheap
    bytes, and each repeat costs the decoder a pass over every coefficient."""
    segs = jpeg_segments(progressive)
    sos = [s for s in segs if s[0] == 0xDA]
    _, start, end = sos[-1]
    eoi = segs[-1][1]
    return progressive[:end] + progressive[start:end] * times + progressive[eoi:]


def many_page_tiff(pages: int, side: int = 8) -> bytes:
    """An uncompressed gray TIFF with `pages` IFDs that all share one strip of pixel data."""
    strip_off = 8
    pixels = bytes(range(side * side)) if side * side <= 256 else b"\x80" * (side * side)
    first_ifd = strip_off + len(pixels)
    first_ifd += first_ifd % 2
    n_entries = 8
    ifd_len = 2 + n_entries * 12 + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", first_ifd))
    out += pixels
    out += b"\x00" * (first_ifd - len(out))
    for i in range(pages):
        here = first_ifd + i * ifd_len
        nxt = here + ifd_len if i + 1 < pages else 0
        entries = [
            (256, 3, 1, side),  # ImageWidth
            (257, 3, 1, side),  # ImageLength
            (258, 3, 1, 8),  # BitsPerSample
            (259, 3, 1, 1),  # Compression: none
            (262, 3, 1, 1),  # Photometric: BlackIsZero
            (273, 4, 1, strip_off),  # StripOffsets
            (278, 3, 1, side),  # RowsPerStrip
            (279, 4, 1, side * side),  # StripByteCounts
        ]
        out += struct.pack("<H", n_entries)
        for tag, kind, count, value in entries:
            raw = struct.pack("<H", value) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\x00")
        out += struct.pack("<I", nxt)
    return bytes(out)


def big_png(width: int, height: int, *, mode: str = "RGBA", bits: int = 8) -> bytes:
    """A valid PNG of any size, compressed row by row (never the whole image in memory):
    a smooth horizontal ramp so that it is not all one colour."""
    color_type, channels = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4), "LA": (4, 2)}[mode]
    bpp = channels * bits // 8
    ramp = np.linspace(0, (1 << bits) - 1, width).astype(">u2" if bits == 16 else np.uint8)
    row = np.repeat(ramp[:, None], channels, axis=1)
    if mode in ("RGBA", "LA"):
        row[:, -1] = (1 << bits) - 1  # opaque
    raw_row = b"\x00" + row.tobytes()
    assert len(raw_row) == 1 + width * bpp
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(raw_row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bits, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def big_avif(width: int, height: int) -> bytes:
    """A photo-like AVIF of any size: smooth noise (a small random picture enlarged), coded
    at libaom's fastest speed (a 40 MP one in about 5 s on this CPU)."""
    rng = np.random.default_rng(width * 7 + height)
    small = rng.integers(0, 256, (max(2, height // 10), max(2, width // 10), 3), dtype=np.uint8)
    return encode(Image.fromarray(small).resize((width, height)), "AVIF", quality=50, speed=10)


def big_avif_flat(side: int) -> bytes:
    """A square AVIF of a gradient: a few KB however large (16384 px: 6 KB)."""
    img = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    return encode(img, "AVIF", quality=20, speed=10)


def avif_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite an AVIF's first `ispe` property (its declared size; the pixels stay small)."""
    at = data.index(b"ispe") + 8  # after the box type and its version/flags
    return data[:at] + struct.pack(">II", width, height) + data[at + 8 :]


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF dimensions of a JPEG (the body stays the small original)."""
    for marker, start, _ in jpeg_segments(data):
        if marker in (0xC0, 0xC1, 0xC2):
            return data[: start + 5] + struct.pack(">HH", height, width) + data[start + 9 :]
    raise ValueError("no SOF segment")


def gif_with_size(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame claim any size, with a one-pixel body."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + b","
        + struct.pack("<HHHHB", 0, 0, width, height, 0)
        + b"\x02\x02\x44\x01\x00;"
    )


def bmp_with_size(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming any size, with almost no pixel data."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    body = b"\x00" * 64
    return b"BM" + struct.pack("<IHHI", 14 + len(header) + len(body), 0, 0, 54) + header + body


def tiff_one_row_strips(width: int, height: int) -> bytes:
    """An uncompressed gray TIFF stored as `height` strips of one row each."""
    n = height
    ifd_len = 2 + 8 * 12 + 4
    offs_at = 8 + ifd_len
    counts_at = offs_at + 4 * n
    data_at = counts_at + 4 * n
    offsets = (data_at + np.arange(n, dtype=np.uint32) * width).astype("<u4").tobytes()
    counts = np.full(n, width, dtype="<u4").tobytes()

    def long_entry(tag: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, 4, count, value)

    def short_entry(tag: int, value: int) -> bytes:
        return struct.pack("<HHIHH", tag, 3, 1, value, 0)

    ifd = (
        struct.pack("<H", 8)
        + long_entry(256, 1, width)
        + long_entry(257, 1, height)
        + short_entry(258, 8)
        + short_entry(259, 1)
        + short_entry(262, 1)
        + long_entry(273, n, offs_at)
        + long_entry(278, 1, 1)
        + long_entry(279, n, counts_at)
        + struct.pack("<I", 0)
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + offsets + counts + b"\x80" * (width * n)


def tiff_of_units(
    fields: dict[int, tuple[int, list[int] | bytes]],
    units: list[bytes],
    *,
    tiled: bool = False,
    little: bool = True,
) -> bytes:
    """A one-page TIFF of `units` (strips, or tiles row by row) as given: the header, an IFD
    of `fields` (tag -> field type and values, or raw bytes in the file's order) with the
    units' offsets and byte counts added, then the units themselves."""
    bo = "<" if little else ">"
    formats = {1: "B", 3: "H", 4: "I"}

    def entries(offsets: list[int]) -> list[tuple[int, int, int, bytes]]:
        out = []
        for tag, (kind, values) in fields.items():
            if isinstance(values, bytes):
                out.append((tag, kind, len(values) // _TYPE_SIZE[kind], values))
            else:
                raw = struct.pack(f"{bo}{len(values)}{formats[kind]}", *values)
                out.append((tag, kind, len(values), raw))
        n = len(units)
        where, sizes = (324, 325) if tiled else (273, 279)
        out.append((where, 4, n, struct.pack(f"{bo}{n}I", *offsets)))
        out.append((sizes, 4, n, struct.pack(f"{bo}{n}I", *map(len, units))))
        return out

    start = len(tiff_ifd_bytes(entries([0] * len(units)), little=little))
    offsets = list(itertools.accumulate(map(len, units[:-1]), initial=start))
    return tiff_ifd_bytes(entries(offsets), little=little) + b"".join(units)


def crafted_tiff(
    pixels: np.ndarray,
    *,
    tile: int | None = None,
    rows: int | None = None,
    deflate: bool = False,
    predictor: bool = False,
    little: bool = True,
    extra: dict[int, tuple[int, list[int] | bytes]] | None = None,
    damage: Callable[[list[bytes]], list[bytes]] | None = None,
) -> bytes:
    """An 8 or 16-bit gray, gray and alpha, RGB or RGBA TIFF of `pixels` (H x W [x C]) in
    ways Pillow writes none: tiled (square tiles of `tile` px, the edge ones padded),
    big-endian, with the horizontal predictor (2); else strips of `rows` rows (all of
    them: one strip). Deflate (compression 8) or uncompressed. `extra` fields added or
    replacing the made ones; `damage` changes the units (as stored) before they are written."""
    h, w = pixels.shape[:2]
    px = pixels.reshape(h, w, -1)
    channels, bits = px.shape[2], px.dtype.itemsize * 8
    high, wide = (tile, tile) if tile else (rows or h, w)
    padded = np.zeros((-(-h // high) * high, -(-w // wide) * wide, channels), px.dtype)
    padded[:h, :w] = px
    units = []
    for y in range(0, h, high):
        for x in range(0, w, wide):
            block = padded[y : y + high, x : x + wide] if tile else px[y : y + high]
            if predictor:  # each sample less the one before it in the row (modulo 2**bits)
                block = np.diff(block, axis=1, prepend=np.zeros_like(block[:, :1]))
            raw = block.astype(block.dtype.newbyteorder("<" if little else ">")).tobytes()
            units.append(zlib.compress(raw) if deflate else raw)
    units = damage(units) if damage is not None else units
    fields: dict[int, tuple[int, list[int] | bytes]] = {
        256: (4, [w]),
        257: (4, [h]),
        258: (3, [bits] * channels),
        259: (3, [8 if deflate else 1]),
        262: (3, [2 if channels >= 3 else 1]),  # RGB, or BlackIsZero
        277: (3, [channels]),
        284: (3, [1]),
    }
    if channels in (2, 4):
        fields[338] = (3, [2])  # unassociated alpha
    if predictor:
        fields[317] = (3, [2])
    fields.update({322: (3, [high]), 323: (3, [high])} if tile else {278: (4, [high])})
    fields.update(extra or {})
    return tiff_of_units(fields, units, tiled=tile is not None, little=little)


def bmp_rle8_runs(width: int, height: int, runs: int) -> bytes:
    """An 8-bit RLE BMP whose pixel data is `runs` one-pixel runs, row after row (each row
    ended by an end-of-line escape), then end-of-bitmap."""
    row = b"\x01\x05" * width + b"\x00\x00"
    data = row * (runs // width) + b"\x00\x01"
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    offset = 14 + 40 + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + header + palette + data


def zip_bytes(entries: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    """A zip archive holding `entries` (name -> bytes), written in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tiff_with_private_tags(tags: int, size: int, *, shared: bool) -> bytes:
    """A deflate 64x64 gray TIFF with `tags` private UNDEFINED tags of `size` bytes each,
    stored one after another, or all pointing at the same bytes (`shared`)."""
    fields = {256: (4, [64]), 257: (4, [64]), 258: (3, [8]), 259: (3, [8]), 262: (3, [1])}
    fields |= {278: (4, [64])}
    fields |= {40000 + i: (7, bytes(4)) for i in range(tags)}
    data = bytearray(tiff_of_units(fields, [zlib.compress(bytes(64 * 64))]))
    start = len(data)
    data += bytes(size if shared else size * tags)
    (ifd,) = struct.unpack_from("<I", data, 4)
    (n,) = struct.unpack_from("<H", data, ifd)
    for i in range(n):
        at = ifd + 2 + 12 * i
        (tag,) = struct.unpack_from("<H", data, at)
        if tag >= 40000:
            where = start if shared else start + (tag - 40000) * size
            struct.pack_into("<HHII", data, at, tag, 7, size, where)
    return bytes(data)


# --- HEIC (encoded with pillow-heif, a test dependency; the server decodes with pi-heif) ---


def heic(img: Image.Image, **kwargs: object) -> bytes:
    """A HEIC file of `img` (libheif with x265, fastest preset)."""
    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_pillow(img).save(out, quality=kwargs.pop("quality", 80), **kwargs)
    return out.getvalue()


def _box(kind: bytes, body: bytes, version: int | None = None, flags: int = 0) -> bytes:
    head = b"" if version is None else bytes([version, 0, 0, flags])
    return struct.pack(">I", 8 + len(head) + len(body)) + kind + head + body


def _heic_parts(data: bytes) -> tuple[bytes, bytes]:
    """(the hvcC box, the image item's coded data) of a one-image HEIC."""
    from app.isobmff import item_data, located_items, meta_children

    _, children = meta_children(data)
    at = data.index(b"hvcC") - 4
    hvcc = data[at : at + int.from_bytes(data[at : at + 4], "big")]
    located = located_items(data, children)
    return hvcc, item_data(data, next(iter(located.values())))


def heic_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a HEIC's first `ispe` property (its declared size; the coded picture stays)."""
    return avif_with_size(data, width, height)  # the same box in the same container


def heic_grid(
    tile: bytes,
    rows: int,
    cols: int,
    out: tuple[int, int],
    ispe: tuple[int, int] | None = None,
    *,
    idat: bool = True,
    iden: bool = False,
    alpha: bool = False,
) -> bytes:
    """A HEIC whose primary item is a rows x cols grid of one tile (a HEIC of one image, every
    tile pointing at its coded data) pasted onto an `out` canvas, declared by its `ispe` as
    `ispe` (default: `out`). Built box by box (ISO/IEC 23008-12): no encoder writes grids.
    `idat`: the grid's own data in the meta box's idat (iloc version 1, construction method
    1), as Apple's and libheif's files hold it; else in mdat. `iden`: the tiles are identity
    items all made of one coded picture (item 1), decoded once per tile. `alpha` (with `iden`):
    the primary item is another item of the same coded data (999) and the grid is its alpha
    plane (an `auxl` reference), which libheif decodes with it."""
    hvcc, coded = _heic_parts(tile)
    n, grid_id = rows * cols, 1000
    wide = max(out) > 0xFFFF
    grid = bytes([0, int(wide), rows - 1, cols - 1]) + struct.pack(">II" if wide else ">HH", *out)
    ids = list(range(2, n + 2)) if iden else list(range(1, n + 1))
    coded_ids = ([1] if iden else ids) + ([999] if alpha else [])  # 999: the alpha's owner
    # the tiles are hidden (flags 1): the grid is the one picture a viewer lists
    infe = b"".join(_box(b"infe", struct.pack(">HH", i, 0) + b"hvc1\x00", 2, 1) for i in coded_ids)
    if iden:
        infe += b"".join(_box(b"infe", struct.pack(">HH", i, 0) + b"iden\x00", 2, 1) for i in ids)
    infe += _box(b"infe", struct.pack(">HH", grid_id, 0) + b"grid\x00", 2)
    items = len(coded_ids) + (n if iden else 0) + 1
    side = _tile_side(hvcc)
    ipco = _box(
        b"ipco",
        hvcc
        + _box(b"ispe", struct.pack(">II", *side), 0)
        + _box(b"ispe", struct.pack(">II", *(ispe or out)), 0),
    )
    ipma = struct.pack(">I", items)
    ipma += b"".join(struct.pack(">HBBB", i, 2, 0x81, 0x02) for i in coded_ids)
    if iden:
        ipma += b"".join(struct.pack(">HBB", i, 1, 0x02) for i in ids)
    ipma += struct.pack(">HBB", grid_id, 1, 0x03)
    refs = _box(b"dimg", struct.pack(">HH", grid_id, n) + struct.pack(f">{n}H", *ids))
    if iden:
        refs += b"".join(_box(b"dimg", struct.pack(">HHH", i, 1, 1)) for i in ids)
    if alpha:
        refs += _box(b"auxl", struct.pack(">HHH", grid_id, 1, 999))

    def meta(base: int) -> bytes:
        iloc = bytes([0x44, 0x00]) + struct.pack(">H", len(coded_ids) + 1)
        iloc += b"".join(struct.pack(">HHHHII", i, 0, 0, 1, base, len(coded)) for i in coded_ids)
        if idat:  # construction method 1: an offset into idat's payload
            iloc += struct.pack(">HHHHII", grid_id, 1, 0, 1, 0, len(grid))
        else:
            iloc += struct.pack(">HHHHII", grid_id, 0, 0, 1, base + len(coded), len(grid))
        return _box(
            b"meta",
            _box(b"hdlr", b"\x00" * 4 + b"pict" + b"\x00" * 13, 0)
            + _box(b"pitm", struct.pack(">H", 999 if alpha else grid_id), 0)
            + _box(b"iinf", struct.pack(">H", items) + infe, 0)
            + _box(b"iref", refs, 0)
            + _box(b"iprp", ipco + _box(b"ipma", ipma, 0))
            + _box(b"iloc", iloc, 1)
            + (_box(b"idat", grid) if idat else b""),
            0,
        )

    ftyp = _box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic")
    base = len(ftyp) + len(meta(0)) + 8
    return ftyp + meta(base) + _box(b"mdat", coded + (b"" if idat else grid))


def _tile_side(hvcc_box: bytes) -> tuple[int, int]:
    from app.heif_items import hvcc_sizes

    w, h, _, _ = hvcc_sizes(hvcc_box, 8, len(hvcc_box))[0]
    return w, h
