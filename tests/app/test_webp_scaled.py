"""app.webp_scaled: a still WebP decoded by libwebp straight at the reduced size gives the
sizes, modes, orientation, answers and top-1 of Pillow's decode + reduce, close in value,
without a full-size copy; whatever libwebp cannot do goes the way it went before."""

from __future__ import annotations

import ctypes
import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import webp_scaled
from app.bundle import InputSpec, load_bundle
from app.errors import ServiceError
from app.imaging import ImageLimits, decode, prepare
from app.pixels import flatten, reduce_and_convert
from app.runtime import OnnxModel
from app.strip_plans import plan
from tests.conftest import ROOT
from tests.images import encode, loaded_sizes


def _picture(size: tuple[int, int], alpha: bool, photos: Path) -> Image.Image:
    """A real photo at `size`; with alpha, a transparent outside and half-transparent bands."""
    with Image.open(photos / "skimage" / "chelsea.png") as cat:
        img = cat.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    if alpha:
        w, h = size
        yy, xx = np.mgrid[0:h, 0:w]
        a = np.where(np.hypot(xx - w / 2, yy - h / 2) < min(w, h) / 3, 255, 0)
        a = np.where((xx // 97) % 3 == 0, 128, a).astype(np.uint8)
        img.putalpha(Image.fromarray(a))
    return img


def _pillow_reduced(data: bytes, factor: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return flatten(reduce_and_convert(img, factor))


def test_structs_are_laid_out_as_decode_h_declares_them() -> None:
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("the sizes below are LP64's (x86_64, aarch64)")
    sizes = {
        webp_scaled.Features: 40,
        webp_scaled.RGBABuffer: 24,
        webp_scaled.YUVABuffer: 80,
        webp_scaled.BufferUnion: 80,
        webp_scaled.DecBuffer: 120,
        webp_scaled.DecoderOptions: 76,
        webp_scaled.DecoderConfig: 240,
    }
    assert {t: ctypes.sizeof(t) for t in sizes} == sizes
    assert webp_scaled.DecoderConfig.output.offset == 40
    assert webp_scaled.DecoderConfig.options.offset == 160
    lib = webp_scaled.library()
    assert lib is not None, "no usable libwebp next to Pillow"
    config = webp_scaled.DecoderConfig()
    assert lib.WebPInitDecoderConfigInternal(ctypes.byref(config), webp_scaled.ABI_VERSION)
    # another ABI major is refused by libwebp itself: the fallback's trigger
    assert not lib.WebPInitDecoderConfigInternal(ctypes.byref(config), 0x0309)


def test_the_library_is_the_one_pillow_loaded() -> None:
    lib = webp_scaled.library()
    maps = Path("/proc/self/maps")
    if lib is None or not maps.exists():
        pytest.skip("not Linux, or no libwebp")
    assert lib._name in maps.read_text()  # already mapped: Pillow's own, not another copy


CASES = [
    (lossless, alpha, size, factor)
    for lossless in (False, True)
    for alpha in (False, True)
    for size, factor in (((800, 600), 2), ((1203, 901), 3), ((1001, 749), 4))
]


@pytest.mark.parametrize(("lossless", "alpha", "size", "factor"), CASES)
def test_close_to_pillows_decode_and_reduce(
    lossless: bool, alpha: bool, size: tuple[int, int], factor: int, photos_dir: Path
) -> None:
    """Measured (chelsea, these cases): mean absolute difference 0.4-1.0 grey levels lossy
    (99th percentile 3-5), 0.1-0.3 lossless (1-2): libwebp rescales a lossy picture in YUV,
    before upsampling its chroma; the last partial column and row are their neighbours'."""
    options = {"lossless": True, "method": 0} if lossless else {"quality": 85}
    data = encode(_picture(size, alpha, photos_dir), "WEBP", **options)
    expected = _pillow_reduced(data, factor)
    got = webp_scaled.decode_reduced(data, "RGBA" if alpha else "RGB", size, factor)
    assert got is not None
    assert got.mode == ("RGBa" if alpha else "RGB")
    got = flatten(got)
    assert (got.size, got.mode) == (expected.size, expected.mode)
    diff = np.abs(np.asarray(got, np.int16) - np.asarray(expected, np.int16))
    assert diff.mean() < (0.8 if lossless else 2.0)
    assert np.percentile(diff, 99) <= (4 if lossless else 10)


def test_decode_takes_this_way_and_orients_by_exif(
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
    photos_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    img = _picture((1800, 1000), False, photos_dir)
    img.paste((0, 0, 0), (0, 0, 300, 1000))  # a dark left edge: which way it turned shows
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(img, "WEBP", quality=90, exif=exif.tobytes())
    with loaded_sizes() as loaded:
        upright, info = decode(data, imagenet_spec, default_limits)
    assert loaded == [], "Pillow decoded it"
    assert (info.orientation, info.exif, upright.size) == (6, "applied", (500, 900))
    assert np.asarray(upright)[:40].mean() < 5  # turned clockwise: the left edge on top
    monkeypatch.setattr(webp_scaled, "library", lambda: None)
    whole, whole_info = decode(data, imagenet_spec, default_limits)
    assert whole_info == info
    assert np.abs(np.asarray(upright, np.int16) - np.asarray(whole, np.int16)).mean() < 2
    prepared = prepare(data, imagenet_spec, default_limits)
    assert prepared.info.orientation == 6 and prepared.array.shape == (224, 224, 3)


def _vp8x_canvas(data: bytes, w: int, h: int) -> bytes:
    assert data[12:16] == b"VP8X"
    return data[:24] + struct.pack("<I", w - 1)[:3] + struct.pack("<I", h - 1)[:3] + data[30:]


def _damaged(photos: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    lossy = encode(_picture((1600, 1200), False, photos), "WEBP", quality=80)
    alpha = encode(_picture((1600, 1200), True, photos), "WEBP", quality=80)
    exif = Image.Exif()
    exif[0x0112] = 3
    vp8x = encode(_picture((1600, 1200), False, photos), "WEBP", quality=80, exif=exif.tobytes())

    def garbage(data: bytes, at: float, n: int = 2000) -> bytes:
        i = int(len(data) * at)
        return data[:i] + bytes(rng.integers(0, 256, n, dtype=np.uint8)) + data[i + n :]

    return {
        "cut in half": lossy[: len(lossy) // 2],
        "cut, RIFF size fixed": b"RIFF" + struct.pack("<I", 40_000 - 8) + lossy[8:40_000],
        "garbage in the VP8 data": garbage(lossy, 0.5),
        "garbage at the VP8 data's end": garbage(lossy, 0.999),  # 422: the frame span
        "garbage in the VP8 data after ALPH": garbage(alpha, 0.9),
        "garbage in the ALPH data": garbage(alpha, 0.05, 50),
        "VP8X canvas larger": _vp8x_canvas(vp8x, 2000, 1200),
        "VP8X canvas smaller": _vp8x_canvas(vp8x, 1599, 1199),
        "garbage in the EXIF after the image": garbage(vp8x, 0.9999, 8),
    }


def _answer(data: bytes, spec: InputSpec, limits: ImageLimits) -> str:
    try:
        img, info = decode(data, spec, limits)
    except ServiceError as exc:
        return f"{exc.status} {exc}"
    return f"200 {img.size} {info.orientation}"


@pytest.mark.slow  # 1.3 s: full runs only
def test_damaged_webps_get_the_answers_they_got_before(
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
    photos_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = _damaged(photos_dir)
    now = {name: _answer(data, imagenet_spec, default_limits) for name, data in cases.items()}
    monkeypatch.setattr(webp_scaled, "library", lambda: None)
    then = {name: _answer(data, imagenet_spec, default_limits) for name, data in cases.items()}
    assert now == then
    assert now["garbage at the VP8 data's end"].startswith("422 The WEBP image is damaged")
    assert now["cut in half"].startswith("422")


def test_what_libwebp_cannot_do_here_goes_as_before(photos_dir: Path) -> None:
    frames = [_picture((1200, 900), False, photos_dir), _picture((1200, 900), True, photos_dir)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:])
    animated = out.getvalue()
    assert webp_scaled.still_features(animated) is None
    assert webp_scaled.decode_reduced(animated, "RGBA", (1200, 900), 2) is None
    assert plan(animated, Image.open(io.BytesIO(animated)), 2) is None
    still = encode(frames[0], "WEBP")
    small = plan(still, Image.open(io.BytesIO(still)), 1)
    assert small is None, "nothing to reduce in a small picture: Pillow's load"
    reduced = plan(still, Image.open(io.BytesIO(still)), 2)
    assert reduced is not None and reduced.reduced is not None and reduced.strips is None


@pytest.mark.slow  # three photos coded at up to 6000x4000
def test_same_top1_as_pillows_decode_on_real_photos(
    imagenet_spec: InputSpec,
    default_limits: ImageLimits,
    photos_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = OnnxModel(load_bundle(ROOT / "models" / "imagenet"), ["CPUExecutionProvider"], 1)
    shots = {
        "foolbox/imagenet_03_990.jpg": (2000, 2000),
        "imgaug/quokka.jpg": (3600, 2400),
        "sklearn/china.jpg": (6000, 4000),
    }
    files = []
    for name, size in shots.items():
        with Image.open(photos_dir / name) as photo:
            big = photo.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        files.append(encode(big, "WEBP", quality=90, method=0))
    batch = np.stack([prepare(f, imagenet_spec, default_limits).array for f in files])
    monkeypatch.setattr(webp_scaled, "library", lambda: None)
    old = np.stack([prepare(f, imagenet_spec, default_limits).array for f in files])
    assert np.abs(batch - old).mean() < 2.0
    now, then = model.run(batch).probs, model.run(old).probs
    assert list(now.argmax(1)) == list(then.argmax(1))


PEAK_SCRIPT = """
import io, sys
import numpy as np
from PIL import Image
from app.imaging import prepare
from app.bundle import load_bundle
from app.ingest import limits_from
from app.settings import Settings
from tests.conftest import ROOT
spec, limits = load_bundle(ROOT / "models" / "imagenet").metadata.input, limits_from(Settings())
def status(key):
    return next(int(l.split()[1]) >> 10 for l in open("/proc/self/status") if l.startswith(key))
ramp = np.linspace(0, 255, 4000, dtype=np.float32)
pixels = np.stack([np.add.outer(ramp[:3000] / 2, ramp / 2)] * 3, -1).astype(np.uint8)
data = io.BytesIO()
Image.fromarray(pixels).save(data, "WEBP", quality=80, method=0)
del pixels
warm = io.BytesIO()
Image.new("RGB", (1200, 1000), (9, 99, 199)).save(warm, "WEBP")
prepare(warm.getvalue(), spec, limits)  # first-use costs (libwebp via ctypes) not counted
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
prepare(data.getvalue(), spec, limits)
print(status("VmHWM") - before)
"""


@pytest.mark.slow  # a 12 MP WebP coded, then decoded in a child process
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux peak RSS")
def test_a_12_mp_webp_decodes_without_a_full_size_copy() -> None:
    """Before: +137 MiB for a 12 MP lossy photo (libwebp's two canvases and the frame it hands
    back, 46 MiB each); decoded at the reduced size, +2 MiB (fresh process, its own peak)."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    added_mib = int(out.stdout.split()[-1])
    assert added_mib < 23, f"+{added_mib} MiB: half of one full-size RGBA copy"
