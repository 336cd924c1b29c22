"""app.png_bands: a large PNG decoded a band of rows at a time gives the very pixels the whole
decode gives, never holds the whole image, and fails on damaged data as the whole decode does."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app import png_bands, strip_plans
from app.bundle import InputSpec, load_bundle
from app.errors import InvalidImage
from app.imaging import ImageLimits, decode, prepare
from tests.images import encode, loaded_sizes, png_chunk

ROOT = Path(__file__).resolve().parents[2]
W, H = 1000, 900  # reduced by 2 for a 224 px model (small_bands: bands of 74 rows)
# Thin pictures: too narrow to reduce for a 224 px model (factor 1), over 1 << 20 pixels (the
# gray ones stay 'L' for an RGB model: imaging._CONVERT_LATER_PIXELS). With `small_bands`:
# 15 bands of 625 rows, or of 8 rows lying down.
THIN = (120, 9000)


@pytest.fixture
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands for images of any size, in strips of ~0.3 MB (several bands per test image),
    each kept whole: keeping only what a centre crop sees of a thin one is
    tests/app/test_seen_box.py's."""
    monkeypatch.setattr(png_bands, "MIN_BYTES", 0)
    monkeypatch.setattr("app.pixels.STRIP_BYTES", 300_000)
    monkeypatch.setattr(strip_plans, "seen_box", lambda *args: None)
    monkeypatch.setattr("app.imaging.seen_box", lambda *args: None)  # the whole decode's too


def _picture(channels: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """Blocks of colour with fine noise: every PNG filter type gets used."""
    w, h = size
    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 255, (h // 50 + 1, w // 50 + 1, channels), dtype=np.uint8)
    big = np.kron(blocks, np.ones((50, 50, 1), dtype=np.uint8))[:h, :w]
    return (big + rng.integers(0, 9, big.shape, dtype=np.uint8)).squeeze()


def _picture16(channels: int) -> np.ndarray:
    """16-bit samples: `_picture`'s as the high bytes, noise as the low ones (which carry
    into the high bytes through the filters, so a band behind a wrong row shows it)."""
    low = np.random.default_rng(8).integers(0, 256, (H, W, channels), dtype=np.uint16)
    return _picture(channels).reshape(H, W, channels).astype(np.uint16) * 256 + low


def _png16(
    pixels: np.ndarray, color: int, *before: bytes, filters: Callable[[int], int] = lambda y: y % 5
) -> bytes:
    """A 16-bit PNG (Pillow writes none in colour) of H x W x C samples, its rows filtered
    with each of the five filter types in turn, so that every one starts some band (or row y
    with `filters(y)`)."""
    h, w, channels = pixels.shape
    stored = pixels.astype(">u2").reshape(h, -1).view(np.uint8).astype(np.int32)
    bpp = channels * 2
    up = np.vstack([np.zeros_like(stored[:1]), stored[:-1]])
    left = np.pad(stored, ((0, 0), (bpp, 0)))[:, :-bpp]
    upleft = np.pad(up, ((0, 0), (bpp, 0)))[:, :-bpp]
    guess = left + up - upleft
    pa, pb, pc = np.abs(guess - left), np.abs(guess - up), np.abs(guess - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    predictors = [np.zeros_like(stored), left, up, (left + up) // 2, paeth]
    rows = b"".join(
        bytes([filters(y)])
        + ((stored[y] - predictors[filters(y)][y]) & 0xFF).astype(np.uint8).tobytes()
        for y in range(h)
    )
    header = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    return png_bands.SIGNATURE + b"".join(
        [
            png_chunk(b"IHDR", header),
            *before,
            png_chunk(b"IDAT", zlib.compress(rows)),
            png_chunk(b"IEND", b""),
        ]
    )


def _png(img: Image.Image, **options: object) -> bytes:
    return encode(img, "PNG", **options)


def _rgba(size: tuple[int, int] = (W, H)) -> Image.Image:
    return Image.fromarray(_picture(4, size), "RGBA")


# Built by the test that uses them, not at collection: encoding them all took 17 s of every
# xdist worker's collection (round 36).
_CASES: dict[str, Callable[[], bytes]] = {
    "RGBA": lambda: _png(_rgba()),
    "RGB": lambda: _png(_rgba().convert("RGB"), optimize=True),
    "L": lambda: _png(_rgba().convert("L")),
    "LA": lambda: _png(_rgba().convert("LA")),
    "P": lambda: _png(_rgba().convert("RGB").quantize(100)),
    "P with transparency": lambda: _png(_rgba().convert("RGB").quantize(100), transparency=3),
    "16-bit gray": lambda: _png(Image.fromarray(_picture(1).astype(np.uint16) * 257)),
    "16-bit gray, low values": lambda: _png(Image.fromarray(_picture(1).astype(np.uint16))),
    "16-bit RGB": lambda: _png16(_picture16(3), 2),
    "16-bit RGBA": lambda: _png16(_picture16(4), 6),
    "16-bit gray and alpha": lambda: _png16(_picture16(2), 4),
}


def _whole(
    data: bytes, imagenet_spec: InputSpec, default_limits: ImageLimits
) -> tuple[np.ndarray, int]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(png_bands, "MIN_BYTES", 1 << 62)
        mp.setattr("app.imaging.seen_box", lambda *args: None)  # whole: not its middle only
        img, info = decode(data, imagenet_spec, default_limits)
    return np.asarray(img), info.orientation


# 16-bit colour: 3.4-4.8 s each, full runs only (the fast subset keeps 16-bit gray and alpha)
_SLOW_CASES = {"16-bit RGB", "16-bit RGBA"}


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_CASES else n for n in _CASES],
)
def test_bands_give_the_pixels_of_the_whole_decode(
    name: str, imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    data = _CASES[name]()
    with loaded_sizes() as loaded:
        img, info = decode(data, imagenet_spec, default_limits)
    assert (W, H) not in loaded, "the whole image was decoded"
    bands = [size for size in loaded if size != (1, 1)]  # (1, 1): the chunks read for EXIF
    assert len(bands) >= 3 and all(w == W and h < H for w, h in bands)
    whole, _ = _whole(data, imagenet_spec, default_limits)
    assert np.array_equal(np.asarray(img), whole)
    assert (info.width, info.height, info.decoded_width) == (W, H, W)


@pytest.mark.usefixtures("small_bands")
def test_a_16_bit_gray_png_is_decoded_once_unless_its_values_are_all_under_256(
    monkeypatch: pytest.MonkeyPatch, imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    """Its peak only chooses between values as they are (all under 256) and a shift by 8: the
    bands are reduced once assuming the shift, again only for an image of low values. A pass
    of its own for the peak decoded every band twice (round 36: a 600,000x64 one to digits
    1.56 -> 0.75 s here)."""
    real, decoded = png_bands._decode, {}

    def counted(*args: Any) -> Any:
        decoded[name] = decoded.get(name, 0) + 1
        return real(*args)

    monkeypatch.setattr(png_bands, "_decode", counted)
    for name in ("16-bit gray", "16-bit gray, low values"):
        data = _CASES[name]()
        img, _ = decode(data, imagenet_spec, default_limits)
        whole, _ = _whole(data, imagenet_spec, default_limits)  # not counted: no bands
        assert np.array_equal(np.asarray(img), whole)
    assert decoded["16-bit gray"] >= 3  # bands, each decoded once
    assert decoded["16-bit gray, low values"] == 2 * decoded["16-bit gray"]


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(  # colour: 1-2 s each, full runs only
    ("color", "channels"),
    [
        pytest.param(2, 3, marks=pytest.mark.slow),
        (4, 2),
        pytest.param(6, 4, marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize(
    ("filters", "tail"),
    [
        (lambda y: 2 + y % 3, None),  # Up, Average, Paeth: every row needs the one above
        (lambda y: 4 if y % 7 else 1, 7),  # a row filtered Sub every 7 rows
    ],
)
def test_16_bit_colour_bands_decode_their_low_bytes_from_the_last_row_needing_none_above(
    color: int,
    channels: int,
    filters: Callable[[int], int],
    tail: int | None,
    monkeypatch: pytest.MonkeyPatch,
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
) -> None:
    """A band of 16-bit colour is unfiltered as two 8-bit pictures, its samples' high bytes
    and low bytes; the low ones (all the next band needs) only from the band's last row that
    needs no row above it. The first band (no context row) whose rows all need the one above
    starts from the image's first row, as Pillow does (zeros above it)."""
    real, rows = png_bands._unfiltered, []

    def spy(layout: Any, depth: int, payload: Any, keep: int) -> Any:
        rows.append(keep)
        return real(layout, depth, payload, keep)

    monkeypatch.setattr(png_bands, "_unfiltered", spy)
    data = _png16(_picture16(channels), color, filters=filters)
    img, _ = decode(data, imagenet_spec, default_limits)
    highs, lows = rows[0::2], rows[1::2]  # each band, then its low bytes but the last's
    assert len(highs) >= 3 and sum(highs) == H and len(lows) == len(highs) - 1
    if tail is not None:
        assert max(lows) <= tail
    whole, _ = _whole(data, imagenet_spec, default_limits)
    assert np.array_equal(np.asarray(img), whole)


def _move_exif_after_pixels(data: bytes) -> bytes:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(data[pos : pos + 12 + length])
        pos += 12 + length
    exif = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    assert exif and rest[-1][4:8] == b"IEND"
    return data[:8] + b"".join(rest[:-1]) + exif[0] + rest[-1]


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("after_pixels", [False, True])
def test_the_exif_orientation_is_read_without_decoding_the_image(
    after_pixels: bool, imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    """Pillow finds an eXIf chunk by decoding the whole PNG (it may follow the pixels)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # turn a quarter
    data = _png(Image.fromarray(_picture(3), "RGB"), exif=exif.tobytes())
    data = _move_exif_after_pixels(data) if after_pixels else data
    img, info = decode(data, imagenet_spec, default_limits)
    whole, orientation = _whole(data, imagenet_spec, default_limits)
    assert info.orientation == orientation == 6
    assert img.size[1] > img.size[0]  # upright: taller than wide
    assert np.array_equal(np.asarray(img), whole)


def _exif_chunk(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return png_chunk(b"eXIf", exif.tobytes()[6:])


def _text_chunk(key: bytes, text: bytes) -> bytes:
    return png_chunk(b"tEXt", key + b"\x00" + text)


def _after_pixels(data: bytes, *extra: bytes) -> bytes:
    return data[:-12] + b"".join(extra) + data[-12:]  # before IEND


def _raw_profile(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()
    return b"\nexif\n" + str(len(body)).encode() + b"\n" + body.hex().encode() + b"\n"


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(
    ("name", "extra", "expected"),
    [
        ("two eXIf chunks after the pixels", lambda: [_exif_chunk(6), _exif_chunk(3)], 3),
        (
            "an ImageMagick raw profile",
            lambda: [_text_chunk(b"Raw profile type exif", _raw_profile(6))],
            6,
        ),
        (
            "XMP",
            lambda: [_text_chunk(b"XML:com.adobe.xmp", b'<x tiff:Orientation="8"/>')],
            8,
        ),
    ],
)
def test_orientation_from_any_chunk_after_the_pixels_as_pillow_reads_it(
    name: str,
    extra: Callable[[], list[bytes]],
    expected: int,
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
) -> None:
    data = _after_pixels(_png(Image.fromarray(_picture(3), "RGB")), *extra())
    img, info = decode(data, imagenet_spec, default_limits)
    whole, orientation = _whole(data, imagenet_spec, default_limits)
    assert info.orientation == orientation == expected, name
    assert np.array_equal(np.asarray(img), whole)


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("keep", [0.3, 0.7, 0.99])
def test_a_file_cut_short_is_a_422_as_for_the_whole_decode(
    keep: float, imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    data = _png(Image.fromarray(_picture(4), "RGBA"))
    cut = data[: int(len(data) * keep)]
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        decode(cut, imagenet_spec, default_limits)
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        _whole(cut, imagenet_spec, default_limits)


def _with_image_data(data: bytes, change: Callable[[bytes], bytes]) -> bytes:
    """`data` with its image data (one IDAT) inflated, changed and deflated again."""
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    raw = change(zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")))
    out = [(kind, body) for kind, body in chunks if kind != b"IDAT"]
    out.insert(-1, (b"IDAT", zlib.compress(raw)))
    return data[:8] + b"".join(png_chunk(kind, body) for kind, body in out)


STRIDE = 1 + W * 3
Damage = tuple[str, Callable[[bytes], bytes]]


def _damages(stride: int, missing: int = 50, bad_row: int = 600) -> list[Damage]:
    """Changes to the inflated image data of rows `stride` bytes long (a filter byte first)."""
    return [
        ("rows missing at the end", lambda raw: raw[: -missing * stride]),
        ("one row missing", lambda raw: raw[:-stride]),
        ("more rows than the header", lambda raw: raw + raw[:stride]),
        (
            "a bad filter type",
            lambda raw: raw[: bad_row * stride] + b"\x07" + raw[bad_row * stride + 1 :],
        ),
    ]


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(("name", "change"), _damages(STRIDE))
def test_damaged_image_data_gets_the_answer_the_whole_decode_gets(
    name: str,
    change: Callable[[bytes], bytes],
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
) -> None:
    """What Pillow decodes whole the server has always served (the readable rows, blank
    after): a band decode must not turn it into a 422 at one size and not at another."""
    data = _with_image_data(_png(Image.fromarray(_picture(3), "RGB")), change)
    img, _ = decode(data, imagenet_spec, default_limits)
    whole, _ = _whole(data, imagenet_spec, default_limits)
    assert np.array_equal(np.asarray(img), whole), name


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("2-bit", lambda: _raw_png(depth=2, color=0)),
        ("interlaced", lambda: _interlaced()),
        ("1-bit", lambda: _png(Image.fromarray(_picture(1)).convert("1"))),
        ("animated", lambda: _animated()),
        ("thin, animated", lambda: _animated(THIN)),
    ],
)
def test_other_pngs_are_decoded_whole(name: str, make: object, imagenet_spec: InputSpec) -> None:
    data = make()  # type: ignore[operator]
    for factor in (1, 2):  # thin ones are not reduced (1); 1 and 2-bit ones are 'L' and '1'
        img = Image.open(io.BytesIO(data))
        assert png_bands.layout_for_bands(data, img, factor) is None, name


def _animated(size: tuple[int, int] = (W, H)) -> bytes:
    rgba = Image.fromarray(_picture(4, size), "RGBA")
    return _png(rgba, save_all=True, append_images=[rgba.transpose(Image.Transpose.ROTATE_180)])


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(
    "size", [(W, H), pytest.param(THIN, marks=pytest.mark.slow)], ids=["reduced", "thin"]
)
def test_image_data_after_the_pixels_is_ignored_as_pillow_ignores_it(
    size: tuple[int, int], imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    """A stray IDAT run after a text chunk that follows complete pixels (the whole decode
    once cost a worker 98 MiB more for a 16-bit 8000x5000 one): bands, the same pixels."""
    data = _png(Image.fromarray(_picture(4, size), "RGBA"))
    end = data.rindex(b"IEND") - 4
    stray = _text_chunk(b"a", b"b") + png_chunk(b"IDAT", zlib.compress(b"\x00" * 999))
    data = data[:end] + stray + png_chunk(b"IDAT", zlib.compress(b"\x01")) + data[end:]
    with loaded_sizes() as loaded:
        img, _ = decode(data, imagenet_spec, default_limits)
    assert size not in loaded, "the whole image was decoded"
    whole, _ = _whole(data, imagenet_spec, default_limits)
    assert np.array_equal(np.asarray(img), whole)


@pytest.mark.slow  # two decodes of a file Pillow refuses: about 1 s
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("size", [(W, H), THIN], ids=["reduced", "thin"])
def test_image_data_split_into_two_runs_is_a_422_as_for_the_whole_decode(
    size: tuple[int, int], imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    """Pillow reads the first run only, so its pixels end early: damaged, both ways."""
    data = _two_idat_runs(size)
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        decode(data, imagenet_spec, default_limits)
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        _whole(data, imagenet_spec, default_limits)


def _two_idat_runs(size: tuple[int, int] = (W, H)) -> bytes:
    """The image data in two runs of IDAT chunks, a text chunk between (Pillow refuses it)."""
    data = _with_image_data(_png(Image.fromarray(_picture(4, size), "RGBA")), lambda raw: raw)
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    body, half = data[start + 8 : start + 8 + length], length // 2
    runs = [
        png_chunk(b"IDAT", body[:half]),
        _text_chunk(b"a", b"b"),
        png_chunk(b"IDAT", body[half:]),
    ]
    return data[:start] + b"".join(runs) + data[start + 12 + length :]


_CHANNELS = {0: 1, 2: 3}


def _raw_png(depth: int, color: int) -> bytes:
    """A PNG of rows of zeros, filter type 0."""
    header = struct.pack(">IIBBBBB", W, H, depth, color, 0, 0, 0)
    rows = (b"\x00" + bytes(-(-W * _CHANNELS[color] * depth // 8))) * H
    parts = [
        png_chunk(b"IHDR", header),
        png_chunk(b"IDAT", zlib.compress(rows)),
        png_chunk(b"IEND", b""),
    ]
    return png_bands.SIGNATURE + b"".join(parts)


def _interlaced() -> bytes:
    """Pillow writes no interlaced PNG: flip the interlace byte of the header (and its CRC)."""
    data = bytearray(_png(Image.fromarray(_picture(3), "RGB")))
    data[28] = 1
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
def test_small_pngs_and_unreduced_ones_are_decoded_whole() -> None:
    data = _png(Image.fromarray(_picture(4), "RGBA"))
    img = Image.open(io.BytesIO(data))
    assert png_bands.layout_for_bands(data, img, 2) is None  # 6.6 MB decoded: whole
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(png_bands, "MIN_BYTES", 0)
        assert png_bands.layout_for_bands(data, img, 2) is not None
        assert png_bands.layout_for_bands(data, img, 1) is not None  # converted: bands
        for mode in ("RGB", "L"):  # decoded whole, it is the result itself: whole
            plain = _png(Image.fromarray(_picture(4), "RGBA").convert(mode))
            assert png_bands.layout_for_bands(plain, Image.open(io.BytesIO(plain)), 1) is None


@pytest.mark.slow  # 2 s: checks this module's own encoder
def test_the_16_bit_test_pictures_are_what_pillow_decodes() -> None:
    """`_png16` itself: Pillow decodes it to the high byte of each sample."""
    pixels = _picture16(3)
    decoded = np.asarray(Image.open(io.BytesIO(_png16(pixels, 2))))
    assert np.array_equal(decoded, (pixels >> 8).astype(np.uint8))


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("after_pixels", [False, True])
def test_a_16_bit_colour_png_keeps_its_exif_orientation(
    after_pixels: bool, imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    data = _png16(_picture16(4), 6, _exif_chunk(8))
    data = _move_exif_after_pixels(data) if after_pixels else data
    with loaded_sizes() as loaded:
        img, info = decode(data, imagenet_spec, default_limits)
    assert (W, H) not in loaded
    whole, orientation = _whole(data, imagenet_spec, default_limits)
    assert info.orientation == orientation == 8
    assert np.array_equal(np.asarray(img), whole)


STRIDE16 = 1 + W * 6


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(("name", "change"), _damages(STRIDE16))
def test_damaged_16_bit_colour_gets_the_answer_the_whole_decode_gets(
    name: str,
    change: Callable[[bytes], bytes],
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
) -> None:
    data = _with_image_data(_png16(_picture16(3), 2), change)
    with loaded_sizes() as loaded:
        img, _ = decode(data, imagenet_spec, default_limits)
    assert (W, H) not in loaded
    whole, _ = _whole(data, imagenet_spec, default_limits)
    assert np.array_equal(np.asarray(img), whole), name


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("keep", [0.3, 0.99])
def test_16_bit_colour_cut_short_is_a_422(
    keep: float, imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    data = _png16(_picture16(3), 2)
    cut = data[: int(len(data) * keep)]
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        decode(cut, imagenet_spec, default_limits)
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        _whole(cut, imagenet_spec, default_limits)


def _thin_cases() -> dict[str, Callable[[], bytes]]:
    cases: dict[str, Callable[[], bytes]] = {}
    for size in (THIN, THIN[::-1]):
        tag = f"{size[0]}x{size[1]}"
        cases[f"RGBA {tag}"] = lambda size=size: _png(_rgba(size))
        cases[f"LA {tag}"] = lambda size=size: _png(_rgba(size).convert("LA"))
        cases[f"P with transparency {tag}"] = lambda size=size: _png(
            _rgba(size).convert("RGB").quantize(100), transparency=3
        )
    cases["16-bit gray"] = lambda: _png(Image.fromarray(_picture(1, THIN).astype(np.uint16) * 257))
    return cases


_THIN_CASES = _thin_cases()


@pytest.fixture(scope="module")
def santa_spec() -> InputSpec:
    """The santa bundle's input spec: framed, on white paper (trim, frame, background)."""
    return load_bundle(ROOT / "models" / "santa").metadata.input


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("name", list(_THIN_CASES))
def test_a_thin_png_is_converted_band_by_band(
    name: str,
    imagenet_spec: InputSpec,
    santa_spec: InputSpec,
    default_limits: ImageLimits,
) -> None:
    """Not reduced, but each band converted to the image's working mode and flattened on
    white: no full-size image with alpha; the same image handed on as the whole decode's."""
    data = _THIN_CASES[name]()
    size = Image.open(io.BytesIO(data)).size
    for spec in (imagenet_spec, santa_spec):
        with loaded_sizes() as loaded:
            img, _ = decode(data, spec, default_limits, gray_as_is=True, keep_rgb=True)
        assert size not in loaded, "the whole image was decoded"
        assert len([s for s in loaded if s != (1, 1)]) >= 10
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(png_bands, "MIN_BYTES", 1 << 62)
            whole, _ = decode(data, spec, default_limits, gray_as_is=True, keep_rgb=True)
            whole_prepared = prepare(data, spec, default_limits)
        assert (img.mode, img.size) == (whole.mode, whole.size) == (img.mode, size)
        assert img.mode == ("L" if name.startswith(("LA", "16")) else "RGB")
        assert np.array_equal(np.asarray(img), np.asarray(whole))
        prepared = prepare(data, spec, default_limits)
        assert np.array_equal(prepared.array, whole_prepared.array)


def _thin_rgba(*chunks: bytes) -> bytes:
    data = _png(Image.fromarray(_picture(4, THIN), "RGBA"))
    return data[:33] + b"".join(chunks) + data[33:]  # after IHDR


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("after_pixels", [False, True])
def test_a_thin_png_keeps_its_exif_orientation(
    after_pixels: bool, imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    data = _thin_rgba(_exif_chunk(6))
    data = _move_exif_after_pixels(data) if after_pixels else data
    with loaded_sizes() as loaded:
        img, info = decode(data, imagenet_spec, default_limits)
    assert THIN not in loaded
    whole, orientation = _whole(data, imagenet_spec, default_limits)
    assert info.orientation == orientation == 6
    assert img.size == THIN[::-1]  # upright: lying down
    assert np.array_equal(np.asarray(img), whole)


THIN_STRIDE = 1 + THIN[0] * 4


@pytest.mark.slow  # the damaged, cut and whole-decode cases: about 1 s each
@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(
    ("name", "change"),
    [_damages(THIN_STRIDE, missing=500, bad_row=4000)[i] for i in (0, 3)],
)
def test_a_damaged_thin_png_gets_the_answer_the_whole_decode_gets(
    name: str,
    change: Callable[[bytes], bytes],
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
) -> None:
    data = _with_image_data(_thin_rgba(), change)
    with loaded_sizes() as loaded:
        img, _ = decode(data, imagenet_spec, default_limits)
    assert THIN not in loaded
    whole, _ = _whole(data, imagenet_spec, default_limits)
    assert np.array_equal(np.asarray(img), whole), name


@pytest.mark.usefixtures("small_bands")
def test_a_thin_png_cut_short_is_a_422(
    imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    cut = _thin_rgba()[:-30_000]
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        decode(cut, imagenet_spec, default_limits)
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        _whole(cut, imagenet_spec, default_limits)
