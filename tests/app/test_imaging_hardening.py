"""Ingestion under hostile input, without HTTP: EXIF read defensively, decode work bounded
before it starts, reduce-before-convert with integer maths, messages of our own."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from app.bundle import InputSpec, ResizeSpec
from app.decode_guard import (
    FRAME_COUNT_CAP,
    JpegStructure,
    count_gif_frames,
    count_jpeg_scans,
    count_tiff_pages,
    decode_slot,
    jpeg_structure,
)
from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from app.imaging import ImageLimits, check_request, decode, prepare, resize, to_array
from tests.app.hostile import cases
from tests.images import (
    bmp_rle8_runs,
    encode,
    exif_payload,
    many_page_tiff,
    orientation_entry,
    tiff_one_row_strips,
)

RGB = InputSpec(height=32, width=32, channels=3, color="rgb")
RGB224 = InputSpec(height=224, width=224, channels=3, color="rgb")
GRAY = InputSpec(height=28, width=28, channels=1, color="gray")
LIMITS = ImageLimits()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small(photos_dir: Path) -> Image.Image:
    """A small asymmetric real photo, so every one of the 8 orientations looks different."""
    with Image.open(photos_dir / "skimage" / "chelsea.png") as im:
        return im.convert("RGB").resize((90, 60))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_orientations_are_applied_exactly(
    small: Image.Image, orientation: int, fmt: str
) -> None:
    """Applied once, whoever applies it (Pillow's TIFF loader rotates by itself)."""
    stored = cases.stored_for(orientation, small)
    extra = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(stored, fmt, exif=exif_payload([orientation_entry(orientation)]), **extra)
    img, info = decode(data, RGB, LIMITS)
    assert (info.orientation, info.exif) == (orientation, "applied")
    np.testing.assert_array_equal(np.asarray(img), np.asarray(small))


@pytest.mark.parametrize(
    ("name", "status", "orientation"),
    [
        ("exif-negative-sshort-resolution-unit", "applied", 6),
        ("exif-ascii-xresolution", "applied", 6),
        ("exif-negative-slong-width", "applied", 6),
        ("exif-float-resolution-unit", "applied", 6),
        ("png-exif-chunk-type-confusion", "applied", 6),
        ("exif-nan-rationals", "applied", 6),
        ("tiff-orientation-with-type-confusion", "applied", 6),
        ("exif-orientation-out-of-range", "invalid", 1),
        ("exif-orientation-as-ascii", "invalid", 1),
        ("exif-orientation-as-rational", "invalid", 1),
    ],
)
def test_crafted_exif_is_reported_not_fatal(name: str, status: str, orientation: int) -> None:
    """Type-confused tags next to a valid orientation: rotated; a bad orientation tag: not
    rotated, and said so."""
    (case,) = [c for c in cases.CASES if c.name == name]
    data = case.make()
    assert isinstance(data, bytes)
    img, info = decode(data, RGB224, LIMITS)
    assert (info.exif, info.orientation) == (status, orientation)
    assert img.size == cases.photo().size  # the 512x512 photo, upright or as stored


def test_unparseable_exif_means_no_rotation() -> None:
    data = cases.jpeg_raw_exif(b"Exif\x00\x00MM\x00*\xff\xff\xff\xff", orientation=1)
    _, info = decode(data, RGB224, LIMITS)
    assert info.orientation == 1 and info.exif in ("unreadable", "none")


@pytest.mark.parametrize(
    ("block", "status"),
    [
        (b"Exif\x00\x00garbage-not-tiff", "unreadable"),  # round 28: said "none" (no tag)
        (b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00", "none"),  # TIFF, no tags at all
    ],
)
def test_a_block_that_is_not_exif_is_unreadable_not_absent(block: bytes, status: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(buf, "JPEG", exif=block)
    _, info = decode(buf.getvalue(), RGB224, LIMITS)
    assert (info.exif, info.orientation) == (status, 1)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_the_reported_size_is_as_stored_in_every_format(fmt: str, orientation: int) -> None:
    """Round 29: a TIFF turned a quarter by its EXIF orientation reported its upright size
    (48x64) where every other format reports the size as stored (64x48)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, fmt, exif=exif.tobytes())
    img, info = decode(buf.getvalue(), RGB224, LIMITS)
    assert (info.width, info.height, info.orientation) == (64, 48, orientation)
    assert (info.decoded_width, info.decoded_height) == (64, 48)
    assert img.size == ((48, 64) if orientation in (6, 8) else (64, 48))  # upright


def test_an_arithmetic_coded_jpeg_over_64_kib_decodes() -> None:
    """Round 29: a valid arithmetic-coded JPEG larger than Pillow's 64 KiB feed was refused
    as "damaged or truncated" (libjpeg's arithmetic decoder cannot wait for more input)."""
    data = (Path(__file__).parents[1] / "fixtures" / "grace_hopper_arithmetic.jpg").read_bytes()
    assert len(data) > 64 * 1024 and jpeg_structure(data, 100) == JpegStructure(
        1, True, False, 1.5, precision=8, frame=0xC9
    )
    _, info = decode(data, RGB224, LIMITS)
    assert (info.width, info.height) == (512, 600)
    arr = prepare(data, RGB224, LIMITS).array
    plain = io.BytesIO()
    source = Image.open(io.BytesIO(data))
    source.decodermaxblock = len(data)  # what the fix does; Pillow alone cannot read it
    source.convert("RGB").save(plain, "JPEG")  # Huffman-coded
    assert jpeg_structure(plain.getvalue(), 100) == JpegStructure(
        1, False, False, 1.5, precision=8, frame=0xC0
    )
    baseline = prepare(plain.getvalue(), RGB224, LIMITS).array
    assert np.abs(arr.astype(float) - baseline.astype(float)).mean() < 3  # the same picture


def test_jpeg_scans_are_counted_and_bombs_refused() -> None:
    p = cases.photo()
    assert count_jpeg_scans(encode(p, "JPEG"), 100) == 1
    assert count_jpeg_scans(encode(p, "JPEG", progressive=True), 100) == 10
    assert count_jpeg_scans(encode(p.convert("L"), "JPEG", progressive=True), 100) == 6
    bomb = cases.progressive_bomb(1500)
    assert count_jpeg_scans(bomb, 100) == 101  # stops counting past the cap
    t0 = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="progressive scans"):
        prepare(bomb, RGB224, LIMITS)
    assert time.perf_counter() - t0 < 1.0  # refused from the headers, never decoded
    # Below the scan cap, a progressive file is charged its pixels once per 10 scans begun.
    mid = cases.progressive_bomb(60, side=1000)
    with pytest.raises(PayloadTooLarge, match="pixels of work"):
        prepare(mid, RGB224, ImageLimits(max_request_pixels=5_000_000))
    assert prepare(mid, RGB224, LIMITS).array.shape == (224, 224, 3)


def test_frames_are_counted_only_up_to_the_cap() -> None:
    many = many_page_tiff(40_000)
    assert count_tiff_pages(many, FRAME_COUNT_CAP + 1) == FRAME_COUNT_CAP + 1
    assert count_tiff_pages(many_page_tiff(3), 100) == 3
    t0 = time.perf_counter()
    _, info = decode(many, GRAY, LIMITS)
    assert time.perf_counter() - t0 < 1.0
    assert (info.frames, info.frames_capped) == (FRAME_COUNT_CAP, True)
    gif = cases.gif_many_frames(5000)
    assert count_gif_frames(gif, 10**6) == 5000
    assert decode(gif, GRAY, LIMITS)[1].frames_capped


def test_gif_frame_walk_agrees_with_pillow(small: Image.Image) -> None:
    frames = [
        small,
        small.rotate(90),
        small.rotate(180),
        small.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    ]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)
    with Image.open(io.BytesIO(data)) as im:
        assert count_gif_frames(data, 100) == im.n_frames == 4


def test_request_pixel_budget_spans_the_batch() -> None:
    limits = ImageLimits(max_request_pixels=1_000_000)
    img = encode(Image.new("RGB", (600, 600), (9, 9, 9)), "PNG")  # 0.36 MP each
    budget = limits.budget()
    prepare(img, RGB, limits, budget)
    prepare(img, RGB, limits, budget)
    with pytest.raises(PayloadTooLarge, match="per request"):
        prepare(img, RGB, limits, budget)
    prepare(img, RGB, limits)  # alone, each image fits: a fresh budget per call


def test_request_time_budget() -> None:
    with pytest.raises(PayloadTooLarge, match="took more than"):
        prepare(encode(Image.new("RGB", (64, 64)), "PNG"), RGB, ImageLimits(decode_seconds=0.0))


def test_decode_slots_bound_concurrency() -> None:
    """With one slot held elsewhere, a decode waits for it."""
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with decode_slot(1):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    worker = threading.Thread(
        target=lambda: (prepare(data, RGB, ImageLimits(decode_concurrency=1)), done.set())
    )
    worker.start()
    assert not done.wait(0.3)  # blocked behind the held slot
    release.set()
    assert done.wait(10)
    t.join()
    worker.join()


def test_sixteen_bit_is_integer_shifted() -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    img, info = decode(encode(Image.fromarray(ramp), "PNG"), GRAY, LIMITS)
    assert info.mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(img), (ramp >> 8).astype(np.uint8))


def test_float_and_low_range_gray() -> None:
    f = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    img, _ = decode(encode(Image.fromarray(f, "F"), "TIFF"), GRAY, LIMITS)
    assert np.asarray(img).max() == 255 and np.asarray(img).min() == 0
    low = np.full((20, 20), 200, dtype=np.uint16)  # 16-bit container, 8-bit values: kept
    img, _ = decode(encode(Image.fromarray(low), "PNG"), GRAY, LIMITS)
    assert int(np.asarray(img).mean()) == 200


def test_reduced_alpha_matches_full_size_compositing(small: Image.Image) -> None:
    """Premultiplied reduce then composite == composite at full size then reduce (±1)."""
    big = small.resize((900, 600)).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 900, dtype=np.uint8), (600, 1))
    big.putalpha(Image.fromarray(alpha))
    img, _ = decode(encode(big, "PNG"), RGB, LIMITS)
    assert img.size == (100, 67)  # reduced by 9 before any conversion (>= 2x the input)
    white = Image.new("RGBA", big.size, (255, 255, 255, 255))
    ref = Image.alpha_composite(white, big).convert("RGB").reduce(9)
    diff = np.abs(np.asarray(img, np.int16) - np.asarray(ref, np.int16))
    assert diff.max() <= 2


def test_damaged_files_get_our_message_only() -> None:
    data = encode(cases.photo(), "PNG")[:3000]
    with pytest.raises(InvalidImage) as err:
        prepare(data, RGB, LIMITS)
    detail = err.value.detail
    assert "damaged or truncated" in detail and "0x" not in detail and "BytesIO" not in detail
    with pytest.raises(InvalidImage) as err:
        prepare(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, RGB, LIMITS)
    assert "header" in err.value.detail and "0x" not in err.value.detail


PEAK_SCRIPT = """
import resource, sys
from tests.images import big_png
from app.bundle import InputSpec
from app.imaging import ImageLimits, prepare
data = big_png({w}, {h}, mode="{mode}", bits={bits})
spec = InputSpec(height=224, width=224, channels=3, color="rgb")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prepare(data, spec, ImageLimits())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("w", "h", "mode", "bits", "intrinsic_mb"),
    [(8000, 5000, "L", 16, 80), (7000, 5700, "RGBA", 8, 160)],
)
def test_peak_memory_is_the_decoded_image_plus_a_little(
    w: int, h: int, mode: str, bits: int, intrinsic_mb: int
) -> None:
    """Growth of the peak RSS while preparing one huge image (fresh process): the decoded
    buffer Pillow must hold, plus at most 64 MB (it used to be ~1 GiB and ~0.8 GiB)."""
    script = PEAK_SCRIPT.format(w=w, h=h, mode=mode, bits=bits)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    growth_mb = int(out.stdout.split()[-1])
    assert growth_mb < intrinsic_mb + 64, growth_mb


STRUCTURE_BOMBS = {
    "JPEG": lambda: cases.structure_bomb("JPEG"),
    "PNG-TEXT": lambda: cases.structure_bomb("PNG-TEXT"),
    "PNG-IDAT": lambda: cases.structure_bomb("PNG-IDAT"),
    "GIF": lambda: cases.structure_bomb("GIF"),
    "TIFF-STRIPS": lambda: tiff_one_row_strips(8, 600_000),
    "BMP-RLE": lambda: bmp_rle8_runs(4000, 2500, 2_000_000),
}


@pytest.mark.parametrize("kind", sorted(STRUCTURE_BOMBS))
def test_structure_bombs_are_refused_before_parsing(kind: str) -> None:
    """Millions of tiny records (Pillow parses each in Python: a 19 MB JPEG of empty APP
    segments took 27 s) are refused from a bounded walk over the bytes."""
    data = STRUCTURE_BOMBS[kind]()
    t0 = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="ordinary files have"):
        prepare(data, RGB224, LIMITS)
    assert time.perf_counter() - t0 < 1.0


def test_many_frame_apng_is_fine(small: Image.Image) -> None:
    frames = [small.rotate(i) for i in range(150)]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    _, info = decode(data, RGB, LIMITS)
    assert (info.frames, info.frames_capped) == (FRAME_COUNT_CAP, True)


def test_check_request_refuses_an_over_budget_batch_from_headers() -> None:
    limits = ImageLimits(max_request_pixels=1_000_000)
    img = encode(Image.new("RGB", (600, 600), (9, 9, 9)), "PNG")  # 0.36 MP each
    check_request([img, img], RGB, limits)
    with pytest.raises(PayloadTooLarge, match="per request"):
        check_request([img, img, img], RGB, limits)
    # Damaged or non-image members are left to prepare (which names them).
    check_request([img, b"not an image", img[:100]], RGB, limits)
    # A 40 MP batch is refused without decoding: a header read per image.
    big = cases.big_png(7000, 5700, mode="RGBA")
    t0 = time.perf_counter()
    with pytest.raises(PayloadTooLarge):
        check_request([big] * 32, RGB224, LIMITS)
    assert time.perf_counter() - t0 < 1.0


def test_progressive_jpeg_is_charged_at_full_size() -> None:
    """A drafted baseline JPEG costs its reduced size; a progressive one its full size
    (every scan passes over every coefficient, drafted or not)."""
    big = cases.photo().resize((2048, 2048))
    limits = ImageLimits(max_request_pixels=2_000_000)
    prepare(encode(big, "JPEG", quality=80), RGB224, limits)  # drafted to 1024x1024
    with pytest.raises(PayloadTooLarge, match="pixels of work"):
        prepare(encode(big, "JPEG", quality=80, progressive=True), RGB224, limits)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA"])
def test_transparency_survives_the_strip_path(mode: str) -> None:
    """Large enough to be read in strips: a fully transparent image is white in every mode."""
    if mode == "P":
        im = Image.new("P", (3000, 2000), 0)
        im.putpalette([255, 0, 0] + [0, 0, 255] * 255)
        data = encode(im, "PNG", transparency=0)
    else:
        data = encode(Image.new(mode, (3000, 2000), (0,) * len(mode)), "PNG")
    img, _ = decode(data, RGB, LIMITS)
    assert img.size == (97, 65) and np.asarray(img).min() == 255


THIN_SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # fail with MemoryError, not OOM
from app.bundle import InputSpec, ResizeSpec
from app.imaging import ImageLimits, prepare
data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = prepare(data, InputSpec({spec}), ImageLimits())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(out.array.shape, (after - before) // 1024)
"""
THIN_SPECS = {
    "center-crop": 'height=224, width=224, channels=3, color="rgb", '
    'resize=ResizeSpec(mode="center_crop")',
    "trim": 'height=28, width=28, channels=1, color="gray", trim=True, '
    'resize=ResizeSpec(mode="letterbox")',
    "frame": 'height=224, width=224, channels=3, color="rgb", frame=0.88, '
    'resize=ResizeSpec(mode="center_crop")',
    # products: a gray model that paints a coloured backdrop in colour (kept RGB until then)
    "backdrop": 'height=28, width=28, channels=1, color="gray", trim=True, invert="auto", '
    'background="white", resize=ResizeSpec(mode="letterbox")',
}


def thin_png(w: int, h: int, mode: str, backdrop: str = "white") -> bytes:
    """On `backdrop`, with a dark line along most of its length."""
    img = Image.new(mode, (w, h), backdrop)
    ImageDraw.Draw(img).line([(w // 20, h // 2), (w - w // 20, h // 2)], fill="black")
    return encode(img, "PNG")


@pytest.mark.parametrize(
    ("w", "h", "mode", "spec", "intrinsic_mb"),
    [
        # was scaled to 89,600,000x224 first (3.4 s: full runs; the gray twins stay fast)
        pytest.param(4_000_000, 10, "RGB", "center-crop", 160, marks=pytest.mark.slow),
        # The transposed and the alpha-less twins of the cases around them: full runs only.
        pytest.param(10, 4_000_000, "RGB", "center-crop", 160, marks=pytest.mark.slow),
        (4_000_000, 10, "L", "trim", 40),  # the line was centred in a 3,600,000 px square
        # too many pixels to look for the object in; trimmed in colour on a light-blue
        # backdrop: 2-3.5 s each, full runs only (the fast subset keeps the gray case above)
        pytest.param(4_000_000, 10, "RGB", "frame", 160, marks=pytest.mark.slow),
        pytest.param(4_000_000, 10, "RGB", "backdrop", 160, marks=pytest.mark.slow),
        # Not reducible (100 px high): decoded RGBA + its premultiplied working copy; the
        # copies and whole-image numpy temporaries around them made it +707-878 MB.
        # 5 s (the heaviest case): full runs only; its gray twin below keeps the path fast.
        pytest.param(400_000, 100, "RGBA", "center-crop", 320, marks=pytest.mark.slow),
        pytest.param(400_000, 100, "RGB", "center-crop", 160, marks=pytest.mark.slow),
        (400_000, 100, "L", "center-crop", 40),  # gray for an RGB model: +191 MB converted whole
    ],
)
def test_long_thin_pictures_cost_their_own_size(
    w: int, h: int, mode: str, spec: str, intrinsic_mb: int
) -> None:
    """A 40 MP picture too thin to be reduced before the resize (a 39-117 KB PNG) is
    prepared in about its decoded size, like any 40 MP picture, in a fresh process: center_crop
    scales only the region it keeps, trim shrinks an object longer than its canvas cap, and
    nothing is copied or flattened whole."""
    script = THIN_SCRIPT.format(spec=THIN_SPECS[spec])
    backdrop = "#bed7f0" if spec == "backdrop" else "white"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        input=thin_png(w, h, mode, backdrop),
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:].decode(errors="replace")
    growth_mb = int(out.stdout.split()[-1])
    assert growth_mb < intrinsic_mb + 64, out.stdout


def _bmp(width: int, height: int) -> bytes:
    """A 64x64 RGB BMP with its header's width and height set to the given values."""
    data = bytearray(encode(Image.new("RGB", (64, 64), (200, 30, 30)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def test_a_bmp_with_a_negative_width_is_an_invalid_header_not_a_pixel_limit() -> None:
    """Pillow reads a width of -64 as about 4 billion: it was a 413 'exceeds 40,000,000
    pixels'. A negative height is legal (top-down rows) and still decodes."""
    for width, height in [(-64, 64), (0, 64), (64, 0)]:
        with pytest.raises(InvalidImage) as err:
            prepare(_bmp(width, height), RGB, LIMITS)
        assert f"BMP header is invalid: it gives {width}x{height} pixels" in err.value.detail
    top_down = prepare(_bmp(64, -64), RGB, LIMITS).array
    assert top_down.shape == (32, 32, 3) and top_down[..., 0].mean() > top_down[..., 1].mean()


def _tiff(arr: np.ndarray, bits: int, sample_format: int) -> bytes:
    """A little-endian, uncompressed, one-strip, one-channel TIFF of `arr` (Pillow writes no
    64-bit samples, so the header is written here)."""
    h, w = arr.shape
    pixels = arr.tobytes()
    tags = [
        (256, 4, w),
        (257, 4, h),
        (258, 3, bits),
        (259, 3, 1),  # no compression
        (262, 3, 1),  # black is zero
        (273, 4, 0),  # strip offset, filled in below
        (277, 3, 1),
        (278, 4, h),
        (279, 4, len(pixels)),
        (339, 3, sample_format),
    ]
    data_at = 8 + 2 + 12 * len(tags) + 4
    out = bytearray(b"II*\0" + struct.pack("<IH", 8, len(tags)))
    for tag, kind, value in tags:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed
    return bytes(out + struct.pack("<I", 0) + pixels)


def test_a_float64_tiff_says_its_sample_format_is_not_supported() -> None:
    """It was 422 'header is damaged'; 32-bit float decodes as before."""
    values = np.random.default_rng(0).random((64, 64))
    with pytest.raises(InvalidImage) as err:
        prepare(_tiff(values.astype("<f8"), 64, 3), GRAY, LIMITS)
    detail = err.value.detail
    assert "64-bit floating-point samples" in detail and "damaged" not in detail, detail
    assert "Accepted TIFF samples: 1-, 2-, 4-, 8- and 16-bit unsigned integers" in detail
    arr = prepare(_tiff(values.astype("<f4"), 32, 3), GRAY, LIMITS).array
    assert arr.shape == (28, 28, 1) and arr.std() > 0


@pytest.mark.parametrize("mode", ["stretch", "center_crop", "letterbox"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos", "box"])
def test_a_large_gray_picture_converted_after_resizing_gives_the_same_values(
    mode: str, interpolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gray picture too large after reduction is resized gray and converted to RGB at model
    size: exactly the values of converting it whole first (decode's default). Kept whole
    (not its middle square: test_seen_box.py's) for the centre crop too."""
    monkeypatch.setattr("app.imaging.seen_box", lambda *args: None)
    rng = np.random.default_rng(1)
    gray = Image.fromarray(rng.integers(0, 256, (150, 8000), dtype=np.uint8), mode="L")
    data = encode(gray, "PNG")
    for invert in (False, True):
        spec = InputSpec(
            height=224,
            width=224,
            channels=3,
            color="rgb",
            invert=invert,
            resize=ResizeSpec(mode=mode, interpolation=interpolation, pad_value=255),
        )
        whole, _ = decode(data, spec, LIMITS)  # converted to RGB at 8000x150
        assert whole.mode == "RGB" and whole.size == (8000, 150)
        expected = to_array(resize(ImageOps.invert(whole) if invert else whole, spec), spec)
        got = prepare(data, spec, LIMITS).array
        assert got.shape == (224, 224, 3)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("depth", [24, 0])  # the spec says 0 for these; writers vary
@pytest.mark.parametrize("compression", [4, 5])  # BI_JPEG, BI_PNG
def test_a_bmp_wrapping_jpeg_or_png_says_so(compression: int, depth: int) -> None:
    # It was "header is damaged": the header is fine, the compression is not decoded here.
    # A 415 (the file may be fine, its kind is not decoded here), no longer a 422 (round 36).
    data = bytearray(encode(Image.new("RGB", (8, 8), (1, 2, 3)), "BMP"))
    struct.pack_into("<I", data, 30, compression)
    struct.pack_into("<H", data, 28, depth)
    with pytest.raises(UnsupportedMediaType, match="compression this server does not decode"):
        prepare(bytes(data), RGB, ImageLimits())


def test_a_request_stops_between_images_once_its_answer_is_unwanted() -> None:
    """Round 20: a job's deadline was checked before its images were prepared, not between
    them: six 3-image requests of thin giants went on for 8.9 s of CPU after their 503s."""
    from app.errors import DeadlineExceeded
    from app.ingest import prepare_batch

    spec = InputSpec(height=28, width=28, channels=1, color="gray")
    buf = io.BytesIO()
    Image.new("L", (40, 40), 255).save(buf, "PNG")
    calls: list[int] = []

    def still_wanted() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise DeadlineExceeded("gone")

    with pytest.raises(DeadlineExceeded):
        prepare_batch([buf.getvalue()] * 5, spec, ImageLimits(), still_wanted=still_wanted)
    assert len(calls) == 3  # two images prepared, the third never started
    assert len(prepare_batch([buf.getvalue()] * 2, spec, ImageLimits())) == 2
