"""app.tiff_bands: a large TIFF decoded a band of rows at a time gives the very pixels the
whole decode gives (every mode and compression Pillow writes, tiled and big-endian pages
crafted by hand), never holds the whole page, leaves the pages it cannot split to the whole
decode and fails on damaged data as the whole decode does."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import png_bands, strip_plans, tiff_bands
from app.bundle import InputSpec, load_bundle
from app.errors import InvalidImage, ServiceError
from app.imaging import ImageLimits, decode, prepare
from tests.images import (
    crafted_tiff,
    encode,
    loaded_sizes,
    long_,
    short,
    tiff_ifd_bytes,
    tiff_of_units,
)

ROOT = Path(__file__).resolve().parents[2]
W, H = 301, 203  # for the 28 px digits model: reduced by 3, in bands of 24 rows
ROWS = 37  # the band height of the tests that call `bands` themselves


@pytest.fixture
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands for pages of any size, in strips of ~30 KB (several bands per test page)."""
    monkeypatch.setattr(tiff_bands, "MIN_BYTES", 0)
    monkeypatch.setattr("app.pixels.STRIP_BYTES", 30_000)


@pytest.fixture(scope="module")
def digits_spec() -> InputSpec:
    """A 28 px gray model: a test page of a few hundred pixels is reduced (by 3)."""
    return load_bundle(ROOT / "models" / "digits").metadata.input


def _picture(channels: int, size: tuple[int, int] = (W, H), seed: int = 7) -> np.ndarray:
    """Blocks of colour with fine noise (a band behind a wrong row shows it)."""
    w, h = size
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 250, (h // 10 + 1, w // 10 + 1, channels), dtype=np.uint8)
    big = np.kron(blocks, np.ones((10, 10, 1), dtype=np.uint8))[:h, :w]
    return (big + rng.integers(0, 6, big.shape, dtype=np.uint8)).squeeze()


def _image(mode: str, size: tuple[int, int] = (W, H)) -> Image.Image:
    rgba = Image.fromarray(_picture(4, size), "RGBA")
    gray = _picture(1, size)
    made = {
        "1": lambda: Image.fromarray(gray).convert("1"),
        "P": lambda: rgba.convert("RGB").quantize(64),
        "CMYK": lambda: rgba.convert("RGB").convert("CMYK"),
        "YCbCr": lambda: rgba.convert("RGB").convert("YCbCr"),
        "I;16": lambda: Image.fromarray(gray.astype(np.uint16) * 250),
        "I": lambda: Image.fromarray(gray.astype(np.int32) * 100_000 - 5_000_000),
        "F": lambda: Image.fromarray(gray.astype(np.float32) / 255),
    }
    return made[mode]() if mode in made else rgba.convert(mode)


def _tiff(img: Image.Image, **options: object) -> bytes:
    return encode(img, "TIFF", **options)


_COMPRESSIONS = {
    "1": ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "group3", "group4"),
    "L": ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg", "lzma", "zstd"),
    "RGB": ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg", "lzma", "zstd"),
    "YCbCr": ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"),
    "CMYK": ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"),
}
_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr")


def _written() -> Iterator[tuple[str, str, int | None]]:
    """(mode, compression, strip size): each page in one strip (or as Pillow chooses) and in
    strips of a few rows."""
    for mode in _MODES:
        for compression in _COMPRESSIONS.get(mode, ("raw", "tiff_lzw", "packbits")):
            for strip in (None, 20_000 if compression == "jpeg" else 3_000):
                yield mode, compression, strip


def _pillow_tiff(mode: str, compression: str, strip: int | None) -> bytes:
    options = {"strip_size": strip} if strip else {}
    try:
        return _tiff(_image(mode), compression=compression, **options)
    except (OSError, ValueError, KeyError) as exc:  # a codec this libtiff was built without
        pytest.skip(f"Pillow cannot write {mode} as {compression}: {exc}")


def _whole(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _banded(data: bytes, rows: int = ROWS) -> tuple[Image.Image, list[int]]:
    """The page pasted together from its bands, and the bands' heights."""
    layout = tiff_bands.layout_for_bands(data, Image.open(io.BytesIO(data)), 2)
    assert layout is not None, "decoded whole"
    out, heights = None, []
    for top, band in tiff_bands.bands(layout, rows):
        if out is None:
            out = Image.new(band.mode, layout.size)
            if band.mode == "P":
                out.putpalette(band.getpalette() or [])
        assert top == sum(heights), "a gap or an overlap between bands"
        out.paste(band, (0, top))
        heights.append(band.height)
    assert out is not None and sum(heights) == layout.height
    return out, heights


def _assert_same(banded: Image.Image, whole: Image.Image) -> None:
    assert (banded.mode, banded.size) == (whole.mode, whole.size)
    assert np.array_equal(np.asarray(banded), np.asarray(whole))
    if whole.mode == "P":
        assert banded.getpalette() == whole.getpalette()


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(
    ("mode", "compression", "strip"),
    list(_written()),
    ids=[f"{m}-{c}-{s}" for m, c, s in _written()],
)
def test_bands_give_the_pixels_of_the_whole_decode(
    mode: str, compression: str, strip: int | None
) -> None:
    data = _pillow_tiff(mode, compression, strip)
    banded, heights = _banded(data)
    _assert_same(banded, _whole(data))
    assert len(heights) >= 5 and set(heights[:-1]) == {ROWS} and heights[-1] <= ROWS


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("rows", [1, 6, 7, 10, 50, H - 1, H, 1000])
def test_bands_are_as_high_as_asked_whatever_the_strips(rows: int) -> None:
    """Strips of 7 rows, bands of any height: exactly `rows` rows each but the last."""
    for compression in ("raw", "tiff_lzw"):
        data = _tiff(_image("RGB"), compression=compression, tiffinfo={278: 7})
        banded, heights = _banded(data, rows)
        _assert_same(banded, _whole(data))
        assert heights == [rows] * (H // rows) + ([H % rows] if H % rows else [])


def _crafted_cases() -> Iterator[tuple[str, bytes]]:
    rgb, rgba, gray = _picture(3, (W, H)), _picture(4, (W, H)), _picture(1, (W, H))
    wide = (_picture(1, (W, H), seed=8).astype(np.uint16) << 8) | _picture(1, (W, H), seed=9)
    big = _picture(3, (600, 530))
    for little in (True, False):
        order = "II" if little else "MM"
        yield f"{order} RGB strips of 7", crafted_tiff(rgb, rows=7, little=little)
        yield f"{order} 16-bit one raw strip", crafted_tiff(wide, little=little)
        yield f"{order} 16-bit deflate", crafted_tiff(wide, rows=5, deflate=True, little=little)
        yield (
            f"{order} RGBA deflate, predictor",
            crafted_tiff(rgba, rows=9, deflate=True, predictor=True, little=little),
        )
        yield f"{order} RGB tiles of 64", crafted_tiff(rgb, tile=64, little=little)
        yield (
            f"{order} 16-bit tiles, deflate, predictor",
            crafted_tiff(wide, tile=64, deflate=True, predictor=True, little=little),
        )
    yield "gray tiles of 64, deflate", crafted_tiff(gray, tile=64, deflate=True)
    yield "gray tiles of 16", crafted_tiff(gray, tile=16)
    yield "RGB 600x530 tiles of 256", crafted_tiff(big, tile=256)
    yield "RGB 600x530 tiles of 256, deflate", crafted_tiff(big, tile=256, deflate=True)
    yield (
        "RGBA tiles of 64, deflate, predictor",
        crafted_tiff(rgba, tile=64, deflate=True, predictor=True),
    )
    yield "Pillow's big-endian 16-bit", _tiff(Image.fromarray(wide).convert("I;16B"))


_CRAFTED = list(_crafted_cases())


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(("name", "data"), _CRAFTED, ids=[n for n, _ in _CRAFTED])
def test_tiled_and_big_endian_pages_give_the_pixels_of_the_whole_decode(
    name: str, data: bytes
) -> None:
    banded, heights = _banded(data)
    _assert_same(banded, _whole(data))
    assert len(heights) >= 5 and set(heights[:-1]) == {ROWS}


@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize(
    "options",
    [{"tile": 64, "deflate": True, "predictor": True}, {"tile": 256}, {"rows": 5}],
    ids=["tiles-deflate-predictor", "tiles-256", "strips"],
)
def test_the_crafted_tiffs_are_what_pillow_decodes(
    options: dict[str, object], little: bool
) -> None:
    """`crafted_tiff` itself: Pillow decodes the very pixels it was given."""
    for pixels in (_picture(3), _picture(4), _picture(1).astype(np.uint16) * 257):
        data = crafted_tiff(pixels, little=little, **options)  # type: ignore[arg-type]
        assert np.array_equal(np.asarray(_whole(data)), pixels)


def _decoded(data: bytes, spec: InputSpec, limits: ImageLimits) -> object:
    """What `decode` makes of `data`: the pixels and facts, or the error's class and title."""
    try:
        img, info = decode(data, spec, limits)
    except ServiceError as exc:
        return type(exc), exc.title
    return img.mode, np.asarray(img).tobytes(), info


def _decoded_whole(data: bytes, spec: InputSpec, limits: ImageLimits) -> object:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiff_bands, "MIN_BYTES", 1 << 62)
        return _decoded(data, spec, limits)


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("mode", _MODES)
def test_decode_by_bands_gives_what_the_whole_decode_gives(
    mode: str, digits_spec: InputSpec, default_limits: ImageLimits
) -> None:
    """Through `decode`: the reduction, the conversion and a 16/32-bit or float page's scale
    onto 8 bits (its peak, from a pass of its own) as for the whole page, never loaded."""
    compression = "tiff_lzw" if mode != "1" else "group4"
    data = _tiff(_image(mode), compression=compression, strip_size=3_000)
    with loaded_sizes() as loaded:
        banded = _decoded(data, digits_spec, default_limits)
    assert (W, H) not in loaded, "the whole page was decoded"
    assert len(loaded) >= 5 and all(w == W and h < H for w, h in loaded)
    assert banded == _decoded_whole(data, digits_spec, default_limits)


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_a_wide_gray_page_is_scaled_by_its_peak_in_its_last_band(
    mode: str, digits_spec: InputSpec, default_limits: ImageLimits
) -> None:
    """Dim but for its last rows: the scale onto 8 bits comes from every band."""
    dim = _picture(1).astype(np.float64) / 255 * 0.2
    dim[-3:] = 1.0
    values = {"I;16": dim * 65535, "I": dim * 1e9, "F": dim}[mode]
    img = Image.fromarray(values.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    data = _tiff(img, compression="tiff_lzw", strip_size=3_000)
    layout = tiff_bands.layout_for_bands(data, Image.open(io.BytesIO(data)), 3)
    assert layout is not None
    assert tiff_bands.gray_peak(layout, 24) == float(np.asarray(_whole(data)).max())
    assert _decoded(data, digits_spec, default_limits) == _decoded_whole(
        data, digits_spec, default_limits
    )


def _spy_bands(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = strip_plans.tiff_bands

    def counted(layout: tiff_bands.TiffLayout, rows: int) -> Iterator[tuple[int, Image.Image]]:
        calls.append(rows)
        return real(layout, rows)

    monkeypatch.setattr(strip_plans, "tiff_bands", counted)
    return calls


SQUARE = (300, 198)  # multiples of 3 (the digits model's factor): reducing and turning commute


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("orientation", range(1, 9))
def test_oriented_pages_by_bands_are_turned_as_the_loader_turns_them(
    orientation: int,
    digits_spec: InputSpec,
    default_limits: ImageLimits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bands are as stored; the reduced picture is turned after. Pillow's loader turns the
    whole page itself (and says the upright size before loading)."""
    data = _tiff(_image("RGB", SQUARE), compression="tiff_lzw", tiffinfo={274: orientation})
    calls = _spy_bands(monkeypatch)
    with loaded_sizes() as loaded:
        banded = prepare(data, digits_spec, default_limits)
    assert calls, "decoded whole"
    assert SQUARE not in loaded and SQUARE[::-1] not in loaded
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiff_bands, "MIN_BYTES", 1 << 62)
        whole = prepare(data, digits_spec, default_limits)
    assert banded.info == whole.info
    assert banded.info.orientation == orientation
    assert (banded.info.width, banded.info.height) == SQUARE
    assert np.array_equal(banded.array, whole.array)


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(
    "orientation",
    [6, *(pytest.param(o, marks=pytest.mark.slow) for o in (1, 3, 7))],  # 0.5 s each
)
def test_a_thin_oriented_page_keeps_what_the_model_sees(
    orientation: int,
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not reduced (factor 1), only the part a centre crop sees kept (tensorize.seen_box): a
    box of the page as stored, turned after, is the box of the upright picture: the very
    pixels a PNG of the upright picture gives (its own bands and box)."""
    stored = _image("RGBA", (120, 3000))
    data = _tiff(stored, compression="tiff_lzw", tiffinfo={274: orientation})
    exif = Image.Exif()
    exif[0x0112] = orientation
    png = encode(stored, "PNG", exif=exif.tobytes())
    monkeypatch.setattr(png_bands, "MIN_BYTES", 0)
    calls = _spy_bands(monkeypatch)
    with loaded_sizes() as loaded:
        banded = prepare(data, imagenet_spec, default_limits)
    assert calls and (120, 3000) not in loaded and (3000, 120) not in loaded
    assert np.array_equal(banded.array, prepare(png, imagenet_spec, default_limits).array)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiff_bands, "MIN_BYTES", 1 << 62)
        whole = prepare(data, imagenet_spec, default_limits)
    assert banded.info == whole.info  # its pixels: within 0.03 px of these (test_seen_box)


def _planar(pixels: np.ndarray) -> bytes:
    """An RGB page stored plane by plane (planar configuration 2): one strip per plane."""
    h, w, _ = pixels.shape
    fields: dict[int, tuple[int, list[int] | bytes]] = {
        256: (4, [w]),
        257: (4, [h]),
        258: (3, [8, 8, 8]),
        259: (3, [1]),
        262: (3, [2]),
        277: (3, [3]),
        278: (4, [h]),
        284: (3, [2]),
    }
    return tiff_of_units(fields, [pixels[..., i].tobytes() for i in range(3)])


def _cut(data: bytes) -> bytes:
    """The IFD first, the strips after: the last strips cut off (their offsets past the end)."""
    return data[: len(data) * 3 // 4]


def _repeat_tag() -> bytes:
    """A gray page, one raw strip, its photometric interpretation given twice (black is zero,
    then white is zero): Pillow and libtiff each read it their own way."""
    pixels = _picture(1).tobytes()

    def entries(offset: int) -> list[tuple[int, int, int, bytes]]:
        return [
            (256, 4, 1, long_(W)),
            (257, 4, 1, long_(H)),
            (258, 3, 1, short(8)),
            (262, 3, 1, short(1)),
            (262, 3, 1, short(0)),
            (273, 4, 1, long_(offset)),
            (278, 4, 1, long_(H)),
            (279, 4, 1, long_(len(pixels))),
        ]

    return tiff_ifd_bytes(entries(len(tiff_ifd_bytes(entries(0))))) + pixels


def _with_fields(extra: dict[int, tuple[int, list[int] | bytes]]) -> bytes:
    return crafted_tiff(_picture(1), rows=8, deflate=True, extra=extra)


def _one_strip_for_all(strip: bytes) -> bytes:
    """A gray page of deflate strips of 8 rows, all of them the same bytes: every band would
    copy them again (3,000 strips on one 1 MB: 2.6 s and 499 MiB by bands, 17 MiB whole)."""
    n = -(-H // 8)

    def entries(offset: int) -> list[tuple[int, int, int, bytes]]:
        return [
            (256, 4, 1, long_(W)),
            (257, 4, 1, long_(H)),
            (258, 3, 1, short(8)),
            (259, 3, 1, short(8)),
            (262, 3, 1, short(1)),
            (273, 4, n, long_(offset) * n),
            (278, 4, 1, long_(8)),
            (279, 4, n, long_(len(strip)) * n),
        ]

    return tiff_ifd_bytes(entries(len(tiff_ifd_bytes(entries(0))))) + strip


_WHOLE_CASES: list[tuple[str, Callable[[], bytes]]] = [
    (
        "BigTIFF",
        lambda: _tiff(_image("RGB"), big_tiff=True),
    ),  # uncompressed: libtiff writes classic
    ("old JPEG", lambda: crafted_tiff(_picture(3), rows=8, extra={259: (3, [6])})),
    ("planar configuration 2", lambda: _planar(_picture(3))),
    ("offsets past the end", lambda: _cut(crafted_tiff(_picture(3), rows=8, deflate=True))),
    ("a raw strip past the end", lambda: _cut(crafted_tiff(_picture(3)))),
    ("a repeated tag", _repeat_tag),
    # The pixel tags are copied into every band: far past any real page's, the page goes whole
    # (a 6 MB colour map took 1.2 s and 258 MiB by bands, 0.5 s and 130 MiB whole).
    ("a colour map of 600 KB", lambda: _with_fields({262: (3, [3]), 320: (3, bytes(600_000))})),
    ("JPEG tables of 600 KB", lambda: _with_fields({347: (7, bytes(600_000))})),
    ("BitsPerSample 300,000 times", lambda: _with_fields({258: (3, [8] * 300_000)})),
    ("strips that overlap", lambda: _one_strip_for_all(zlib.compress(bytes(W * 8)) + bytes(5000))),
]


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(("name", "make"), _WHOLE_CASES, ids=[n for n, _ in _WHOLE_CASES])
def test_pages_that_cannot_be_split_are_decoded_whole_as_before(
    name: str, make: Callable[[], bytes], digits_spec: InputSpec, default_limits: ImageLimits
) -> None:
    data = make()
    assert tiff_bands.layout_for_bands(data, Image.open(io.BytesIO(data)), 3) is None, name
    assert _decoded(data, digits_spec, default_limits) == _decoded_whole(
        data, digits_spec, default_limits
    )


@pytest.mark.usefixtures("small_bands")
def test_a_strip_too_large_to_decode_at_once_leaves_the_page_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compressed strip is decoded whole: over MAX_UNIT_BYTES, the page is (a raw one is
    split by rows, however large)."""
    monkeypatch.setattr(tiff_bands, "MAX_UNIT_BYTES", 100_000)  # W x 83 rows
    for data, whole in [
        (crafted_tiff(_picture(3), rows=84, deflate=True), True),
        (crafted_tiff(_picture(3), rows=83, deflate=True), False),
        (crafted_tiff(_picture(3), tile=256), True),
        (crafted_tiff(_picture(3), tile=64), False),
        (crafted_tiff(_picture(3)), False),
    ]:
        layout = tiff_bands.layout_for_bands(data, Image.open(io.BytesIO(data)), 2)
        assert (layout is None) == whole


def _garbage(unit: bytes) -> bytes:
    return np.random.default_rng(1).integers(0, 256, len(unit), dtype=np.uint8).tobytes()


def _in_strip(k: int, change: Callable[[bytes], bytes]) -> Callable[[list[bytes]], list[bytes]]:
    return lambda units: [change(u) if i == k else u for i, u in enumerate(units)]


_DAMAGES: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("garbage", _garbage),
    ("cut short", lambda unit: unit[: len(unit) // 2]),
    ("empty", lambda unit: b""),
    ("one byte", lambda unit: unit[:1]),
    ("twice over", lambda unit: unit + unit),
    ("a zeroed end", lambda unit: unit[: len(unit) // 2] + bytes(len(unit) - len(unit) // 2)),
]


def _pillow_lzw_damaged(change: Callable[[bytes], bytes]) -> bytes:
    """Pillow's LZW strips of a few rows, one in the middle changed in place."""
    data = _tiff(_image("RGB"), compression="tiff_lzw", strip_size=3_000)
    with Image.open(io.BytesIO(data)) as img:
        offsets, counts = img.tag_v2[273], img.tag_v2[279]
    k = len(offsets) // 2
    start, end = offsets[k], offsets[k] + counts[k]
    changed = change(data[start:end])[: end - start]
    return data[:start] + changed.ljust(end - start, b"\x00") + data[end:]


def _damaged_cases() -> Iterator[tuple[str, bytes]]:
    rgb, wide = _picture(3), _picture(1).astype(np.uint16) * 255
    for name, change in _DAMAGES:
        yield (
            f"deflate strip {name}",
            crafted_tiff(rgb, rows=8, deflate=True, damage=_in_strip(12, change)),
        )
        yield (
            f"16-bit tile {name}",
            crafted_tiff(wide, tile=64, deflate=True, predictor=True, damage=_in_strip(5, change)),
        )
        yield f"raw strip {name}", crafted_tiff(rgb, rows=8, damage=_in_strip(12, change))
    for name, change in _DAMAGES[:2]:
        yield f"LZW strip {name}", _pillow_lzw_damaged(change)


_DAMAGED = list(_damaged_cases())


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize(("name", "data"), _DAMAGED, ids=[n for n, _ in _DAMAGED])
def test_damaged_strips_get_the_answer_the_whole_decode_gets(
    name: str, data: bytes, digits_spec: InputSpec, default_limits: ImageLimits
) -> None:
    """The same pixels, or the same 422, and never another exception."""
    assert tiff_bands.layout_for_bands(data, Image.open(io.BytesIO(data)), 3) is not None
    answer = _decoded(data, digits_spec, default_limits)
    assert answer == _decoded_whole(data, digits_spec, default_limits), name
    assert not isinstance(answer, tuple) or answer[0] in (InvalidImage, "RGB", "L")


def test_a_large_tiff_is_never_decoded_whole(
    imagenet_spec: InputSpec, default_limits: ImageLimits
) -> None:
    """The real threshold: a page of 8.4 MP (33.6 MB at 4 bytes a pixel) goes by bands."""
    size = (3000, 2800)
    data = _tiff(_image("L", size), compression="tiff_lzw")
    with loaded_sizes() as loaded:
        img, info = decode(data, imagenet_spec, default_limits)
    assert size not in loaded and len(loaded) > 10
    assert all(w == size[0] and h <= 400 for w, h in loaded)  # groups of 16 strips of 21 rows
    assert (info.width, info.height, img.size) == (*size, (500, 467))  # reduced by 6


@pytest.mark.usefixtures("small_bands")
def test_an_uncompressed_single_strip_is_cut_into_strips_of_a_few_rows() -> None:
    """Not one a row: a thin 8 x 2,500,000 page was 2.5 million strips (12 s, 170 MiB)."""
    for pixels in (_picture(1, (8, 20_000)), _picture(3, (W, H)), _picture(1, (40_000, 9))):
        data = crafted_tiff(pixels)
        layout = tiff_bands.layout_for_bands(data, Image.open(io.BytesIO(data)), 2)
        assert layout is not None
        h, w = pixels.shape[:2]
        row = w * (pixels.size // (w * h))
        assert layout.unit == max(1, min(h, 65_536 // row))
        assert len(layout.offsets) == -(-h // layout.unit)
        assert sum(layout.counts) == row * h
        banded, _ = _banded(data, 1000)
        _assert_same(banded, _whole(data))


@pytest.mark.usefixtures("small_bands")
def test_only_the_pixel_and_layout_tags_are_read() -> None:
    """Other tags' values are not copied (300 tags on the same 4 MB were 1.2 GB)."""
    extra: dict[int, tuple[int, list[int] | bytes]] = {
        40_000 + i: (7, bytes(100)) for i in range(20)
    }
    data = crafted_tiff(_picture(1), rows=8, deflate=True, extra={**extra, 274: (3, [6])})
    read = tiff_bands._read_ifd(data)
    assert read is not None
    assert set(read[1]) == {256, 257, 258, 259, 262, 273, 277, 278, 279, 284}
