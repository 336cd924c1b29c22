"""CMYK pictures with a CMYK ICC profile (print workflows: JPEG, TIFF) are converted to sRGB by
their profile (app/colour.py), reduced in CMYK first; without a usable CMYK profile they decode
exactly as before (Pillow's own CMYK -> RGB). The profile is written in tests/cmyk_profile.py,
and the expected colours are worked out here from its own ink model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageCms

from app import colour
from app.bundle import InputSpec
from app.image_limits import ImageLimits
from app.imaging import decode
from app.main import create_app
from tests.app.test_colour import icc_profile
from tests.cmyk_profile import D50, cmyk_profile, ink_lab, lab_to_xyz
from tests.conftest import make_settings
from tests.images import encode

SPEC = InputSpec(name="image", height=64, width=64, channels=3, color="rgb")
# XYZ (D50) -> linear sRGB (Bradford-adapted, as littlecms does for sRGB's D65 white)
XYZ50_TO_SRGB = np.array(
    [[3.1339, -1.6169, -0.4907], [-0.9788, 1.9161, 0.0335], [0.0719, -0.2290, 1.4052]]
)
PATCHES = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (128, 64, 32, 16)]
PATCHES += [(255, 255, 255, 255), (40, 200, 120, 60)]


def expected(cmyk: tuple[int, int, int, int]) -> np.ndarray:
    """sRGB of these inks by the profile's own model, converted as littlecms converts with the
    perceptual intent to its (ICC v4) sRGB: black point compensation, the profile's black (all
    four inks, made neutral) scaled onto sRGB's black, D50 staying white."""
    black = lab_to_xyz(ink_lab(np.ones(4)) * [1, 0, 0])
    xyz = lab_to_xyz(ink_lab(np.array(cmyk) / 255))
    linear = np.clip(XYZ50_TO_SRGB @ (D50 * (xyz - black) / (D50 - black)), 0, 1)
    return 255 * np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def patches(side: int = 16, height: int = 0) -> Image.Image:
    """The patches side by side, each `side` pixels wide and `height` (or `side`) high."""
    img = Image.new("CMYK", (side * len(PATCHES), height or side))
    for i, ink in enumerate(PATCHES):
        img.paste(ink, (i * side, 0, (i + 1) * side, img.height))
    return img


def cmyk_file(img: Image.Image, fmt: str, icc: bytes | None) -> bytes:
    extra: dict[str, object] = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    return encode(img, fmt, **extra, **({"icc_profile": icc} if icc else {}))


def decoded(data: bytes, spec: InputSpec = SPEC) -> np.ndarray:
    img, _ = decode(data, spec, ImageLimits())
    assert img.mode == "RGB"
    return np.asarray(img).astype(float)


def centres(got: np.ndarray, side: int) -> np.ndarray:
    return got[side // 2, side // 2 :: side][: len(PATCHES)]


def assert_near(got: np.ndarray, want: np.ndarray) -> None:
    """Within 2 levels; 5 for the four-ink black (index 5), where sRGB's curve is steepest:
    5 levels there are 0.0014 in linear light, littlecms's interpolation near black."""
    off = np.abs(got - want).max(axis=-1)
    assert off[5] <= 5 and np.delete(off, 5).max() <= 2, np.c_[got, want.round(1)]


def test_the_profile_written_here_is_one_littlecms_reads() -> None:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(cmyk_profile())).profile
    assert (profile.xcolor_space, profile.device_class, profile.connection_space) == (
        "CMYK",
        "prtr",
        "Lab ",
    )


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_pictures_are_converted_by_their_cmyk_profile(fmt: str) -> None:
    """JPEG: Pillow writes Adobe's APP14 with the inks inverted, as Photoshop does, and reads
    them back upright ('CMYK;I'); the profile sees the inks as printed."""
    data = cmyk_file(patches(), fmt, cmyk_profile())
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "CMYK" and ("adobe" in img.info) == (fmt == "JPEG")
    got = centres(decoded(data), 16)
    assert_near(got, np.array([expected(p) for p in PATCHES]))
    naive = centres(decoded(cmyk_file(patches(), fmt, None)), 16)
    assert np.abs(naive[0] - [0, 255, 255]).max() <= 2  # pure cyan, read without the profile
    assert np.abs(got[0] - naive[0]).max() > 60


def test_a_large_cmyk_picture_is_reduced_in_cmyk_then_converted() -> None:
    """A 2100 px JPEG (drafted by libjpeg to 1/8, then reduced by 2) and TIFF (reduced by 16):
    flat patches come out as the small test's, the profile applied to the small picture."""
    for fmt in ("JPEG", "TIFF"):
        img = patches(300, 2100)
        got = decoded(cmyk_file(img, fmt, cmyk_profile()))
        assert 128 <= got.shape[0] <= 140, fmt
        at = ((np.arange(7) + 0.5) * got.shape[1] / 7).astype(int)
        assert_near(got[got.shape[0] // 2, at], np.array([expected(p) for p in PATCHES]))


def test_cmyk_pictures_without_a_usable_cmyk_profile_decode_as_before() -> None:
    """No profile, a damaged one, an RGB or gray one (they describe RGB pixels, not Pillow's
    conversion of inks: an Adobe RGB one was applied to it before), one over the size limit:
    Pillow's conversion, reduced as before, bit for bit."""
    rng = np.random.default_rng(7)
    inks = Image.fromarray(rng.integers(0, 256, (512, 384, 4), dtype=np.uint8), "CMYK")
    before = np.asarray(inks.convert("RGB").reduce(3)).astype(float)  # 384 // 128 = 3
    assert np.array_equal(decoded(cmyk_file(inks, "TIFF", None)), before)
    profiled = decoded(cmyk_file(inks, "TIFF", cmyk_profile()))
    assert np.abs(profiled - before).mean() > 10
    for icc in (
        icc_profile(),  # Adobe RGB
        icc_profile(space=b"GRAY"),
        cmyk_profile()[:300],
        b"\xff" * 300,
        cmyk_profile(device=b"link"),
    ):
        assert np.array_equal(decoded(cmyk_file(inks, "TIFF", icc)), before)
    oversized = cmyk_profile() + b"\0" * colour.MAX_PROFILE_BYTES
    assert colour.profile_for("CMYK", oversized) == (None, False)
    assert colour.profile_for("CMYK", cmyk_profile()) == (cmyk_profile(), True)
    assert colour.profile_for("RGB", cmyk_profile()) == (cmyk_profile(), False)
    assert colour.to_srgb(Image.new("RGB", (4, 4)), cmyk_profile()).mode == "RGB"  # not applied


def test_a_cmyk_jpeg_with_a_damaged_profile_is_classified(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    with TestClient(
        create_app(make_settings(tiny_models_dir, tmp_path)), base_url="http://localhost"
    ) as c:
        for icc in (b"\xff" * 300, cmyk_profile()[:500], cmyk_profile()):
            data = cmyk_file(patches(), "JPEG", icc)
            r = c.post("/v1/models/tiny/predict", content=data)
            assert r.status_code == 200, r.text
        converted = decoded(cmyk_file(patches(), "JPEG", cmyk_profile()))
        assert np.abs(centres(converted, 16)[0] - expected(PATCHES[0])).max() <= 2
