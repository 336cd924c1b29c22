"""Pictures tagged with a wide-gamut RGB profile are converted to sRGB (app/colour.py); sRGB
ones keep their pixels bit for bit; unusable profiles are ignored. The profile is written here
(an ICC v2 matrix/TRC profile with Adobe RGB (1998)'s primaries), and the expected colour is
worked out independently with the colorimetry below."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageCms

from app import avif_strips, colour
from app.bundle import InputSpec
from app.image_limits import ImageLimits
from app.imaging import decode
from app.main import create_app
from app.nclx import nclx_codes
from tests.conftest import make_settings
from tests.images import encode, heic

# Adobe RGB (1998), D50-adapted (as ICC profiles store them): columns R, G, B; gamma 563/256
ADOBE_D50 = np.array([[0.6097, 0.2053, 0.1492], [0.3111, 0.6257, 0.0632], [0.0195, 0.0609, 0.7446]])
GAMMA = 563 / 256
# XYZ (D50) -> linear sRGB (Bradford-adapted, as littlecms does for sRGB's D65 white)
XYZ50_TO_SRGB = np.array(
    [[3.1339, -1.6169, -0.4907], [-0.9788, 1.9161, 0.0335], [0.0719, -0.2290, 1.4052]]
)
SPEC = InputSpec(name="image", height=64, width=64, channels=3, color="rgb")


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def icc_profile(description: str = "Wide test RGB", space: bytes = b"RGB ") -> bytes:
    """A minimal ICC v2 display profile: white point D50, three primaries, one gamma."""
    xyz = [tuple(ADOBE_D50[:, i]) for i in range(3)]
    desc = description.encode() + b"\0"
    tags = {
        b"desc": b"desc" + b"\0" * 4 + struct.pack(">I", len(desc)) + desc + b"\0" * 79,
        b"wtpt": b"XYZ " + b"\0" * 4 + _s15(0.9642) + _s15(1.0) + _s15(0.8249),
        b"rXYZ": b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in xyz[0]),
        b"gXYZ": b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in xyz[1]),
        b"bXYZ": b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in xyz[2]),
    }
    trc = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 563) + b"\0\0"
    for name in (b"rTRC", b"gTRC", b"bTRC"):
        tags[name] = trc
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for name, data in tags.items():
        table += name + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"none"
        + bytes([2, 0x10, 0, 0])
        + b"mntr"
        + space
        + b"XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def expected_srgb(rgb: tuple[int, int, int]) -> np.ndarray:
    linear = (np.array(rgb) / 255.0) ** GAMMA
    out = np.clip(XYZ50_TO_SRGB @ (ADOBE_D50 @ linear), 0, 1)
    encoded = np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)
    return encoded * 255


def picture(rgb: tuple[int, ...], icc: bytes | None, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    img = Image.new(mode, (64, 64), rgb)
    img.save(buf, fmt, **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()


def decoded(data: bytes, spec: InputSpec = SPEC) -> np.ndarray:
    img, _ = decode(data, spec, ImageLimits())
    return np.asarray(img).astype(float)


def test_the_profile_written_here_is_one_littlecms_reads() -> None:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile()))
    assert profile.profile.xcolor_space == "RGB " and profile.profile.device_class == "mntr"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_wide_gamut_pictures_are_converted_to_srgb(fmt: str) -> None:
    colour_in = (60, 160, 70)
    got = decoded(picture(colour_in, icc_profile(), fmt))[32, 32]
    want = expected_srgb(colour_in)
    assert np.abs(got - want).max() <= 4, (got, want)
    raw = decoded(picture(colour_in, None, fmt))[32, 32]
    assert got[1] - got[0] > raw[1] - raw[0] + 10  # greener than read as sRGB


def test_alpha_survives_the_conversion() -> None:
    data = picture((60, 160, 70, 128), icc_profile(), mode="RGBA")
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGBA" and img.info.get("icc_profile")
    out = colour.to_srgb(img.convert("RGBA"), img.info["icc_profile"])
    assert out.mode == "RGBA" and out.getpixel((5, 5))[3] == 128


@pytest.mark.parametrize(
    "icc",
    [
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),  # sRGB itself
        icc_profile(description="sRGB IEC61966-2.1 (a copy)"),
        b"not a profile at all" * 10,
        icc_profile()[:200],  # cut short
        icc_profile(space=b"GRAY"),  # not an RGB profile
    ],
    ids=["srgb", "srgb-by-name", "junk", "cut", "gray-space"],
)
def test_srgb_and_unusable_profiles_leave_the_pixels_as_decoded(icc: bytes) -> None:
    colour_in = (60, 160, 70)
    assert np.array_equal(decoded(picture(colour_in, icc)), decoded(picture(colour_in, None)))


def test_a_profile_over_the_size_limit_is_not_read() -> None:
    """(A PNG refuses such a chunk at its header already: a colour-profile bomb, 413.)"""
    img = Image.new("RGB", (8, 8), (60, 160, 70))
    assert colour.to_srgb(img, icc_profile() + b"\0" * colour.MAX_PROFILE_BYTES) is img
    assert colour.to_srgb(img, icc_profile()) is not img
    assert colour.to_srgb(img.convert("L"), icc_profile()).mode == "L"  # gray: left alone


def test_a_picture_with_a_damaged_profile_is_classified(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    with TestClient(
        create_app(make_settings(tiny_models_dir, tmp_path)), base_url="http://localhost"
    ) as c:
        for icc in (b"\xff" * 300, icc_profile()):
            r = c.post("/v1/models/tiny/predict", content=picture((200, 30, 30), icc))
            assert r.status_code == 200, r.text


# Display P3 (D65), linear RGB -> XYZ; and linear sRGB -> XYZ (both D65, so no adaptation)
P3_TO_XYZ = np.array([[0.4866, 0.2657, 0.1982], [0.2290, 0.6917, 0.0793], [0.0, 0.0451, 1.0439]])
SRGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
)


def _srgb_decode(v: np.ndarray) -> np.ndarray:
    v = v / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _srgb_encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0, 1)
    return 255 * np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


def heic_nclx(rgb: tuple[int, int, int], primaries: int, transfer: int = 13) -> bytes:
    return heic(
        Image.new("RGB", (64, 64), rgb),
        quality=95,
        color_primaries=primaries,
        transfer_characteristics=transfer,
        matrix_coefficients=6,
        full_range_flag=1,
    )


def test_a_heic_in_display_p3_by_its_nclx_codes_is_converted() -> None:
    """Phones write HEIC's colour space as nclx codes (primaries 12: Display P3) as often as an
    ICC profile; the primaries come with the codes and a profile is made from them."""
    colour_in = (60, 160, 70)
    got = decoded(heic_nclx(colour_in, primaries=12))[32, 32]
    linear = _srgb_decode(np.array(colour_in, dtype=float))  # P3 uses sRGB's tone curve
    want = _srgb_encode(np.linalg.inv(SRGB_TO_XYZ) @ P3_TO_XYZ @ linear)
    assert np.abs(got - want).max() <= 4, (got, want)  # lossy HEVC adds a little
    as_srgb = decoded(heic_nclx(colour_in, primaries=1))[32, 32]
    assert got[1] - got[0] > as_srgb[1] - as_srgb[0] + 10


def test_heic_nclx_codes_of_srgb_or_hdr_leave_the_pixels_as_decoded() -> None:
    colour_in = (60, 160, 70)
    base = decoded(heic_nclx(colour_in, primaries=1))  # BT.709 primaries: sRGB's
    assert np.array_equal(decoded(heic_nclx(colour_in, primaries=2)), base)  # unstated
    pq = decoded(heic_nclx(colour_in, primaries=12, transfer=16))  # HDR (PQ): not converted
    assert np.abs(pq - base).max() <= 2  # the same pixels, but for the codec's rounding


def test_nclx_codes_that_make_no_profile_are_ignored() -> None:
    good = {
        "color_primaries": 12,
        "transfer_characteristics": 13,
        **{
            f"color_primary_{c}_{a}": v
            for c, a, v in (
                ("red", "x", 0.68),
                ("red", "y", 0.32),
                ("green", "x", 0.265),
                ("green", "y", 0.69),
                ("blue", "x", 0.15),
                ("blue", "y", 0.06),
                ("white", "x", 0.3127),
                ("white", "y", 0.329),
            )
        },
    }
    assert colour.profile_of({"nclx_profile": good}) is not None
    for bad in (
        {**good, "color_primary_red_y": 0.0},  # a primary at y = 0
        {**good, "color_primary_green_x": 0.68, "color_primary_green_y": 0.32},  # two alike
        {k: v for k, v in good.items() if k != "color_primary_blue_x"},
        {**good, "color_primary_white_x": "a lot"},
    ):
        assert colour.profile_of({"nclx_profile": bad}) is None, bad
    assert colour.profile_of({"icc_profile": b"abc", "nclx_profile": good}) == b"abc"


# BT.2020 (D65), linear RGB -> XYZ
BT2020_TO_XYZ = np.array(
    [[0.6370, 0.1446, 0.1689], [0.2627, 0.6780, 0.0593], [0.0, 0.0281, 1.0610]]
)


def avif_nclx(rgb: tuple[int, int, int], primaries: int, transfer: int = 13) -> bytes:
    """An AVIF whose `colr` nclx property states these codes: Pillow writes sRGB's (1, 13, 6)
    and has no option for others, so its box is rewritten (the AV1 data, and so the decoded
    pixels, stay the same: libavif's YUV -> RGB reads only the matrix coefficients)."""
    data = encode(Image.new("RGB", (64, 64), rgb), "AVIF", quality=95)
    at = data.index(b"colrnclx") + 8
    assert data[at : at + 4] == bytes([0, 1, 0, 13])
    return data[:at] + struct.pack(">HH", primaries, transfer) + data[at + 4 :]


def _whole(*_: object) -> None:
    return None  # strip_plans.plan: no plan, so Pillow's whole decode


@pytest.mark.parametrize("path", ["libavif strips", "pillow frame", "whole"])
@pytest.mark.parametrize(
    "primaries, to_xyz", [(12, P3_TO_XYZ), (9, BT2020_TO_XYZ)], ids=["p3", "bt2020"]
)
def test_an_avif_in_display_p3_or_bt2020_by_its_nclx_codes_is_converted(
    primaries: int, to_xyz: np.ndarray, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow's AVIF plugin gives no nclx codes (only an ICC profile's bytes): they are read
    from the file's `colr` box, whichever way the picture is decoded."""
    if path == "pillow frame":
        monkeypatch.setattr(avif_strips, "_load", lambda: None)
    elif path == "whole":
        monkeypatch.setattr("app.imaging.plan", _whole)
    colour_in = (60, 160, 70)
    assert "nclx_profile" not in Image.open(io.BytesIO(avif_nclx(colour_in, primaries))).info
    got = decoded(avif_nclx(colour_in, primaries))[32, 32]
    as_srgb = decoded(avif_nclx(colour_in, 1))[32, 32]  # the pixels as AV1 decodes them
    want = _srgb_encode(np.linalg.inv(SRGB_TO_XYZ) @ to_xyz @ _srgb_decode(as_srgb))
    assert np.abs(got - want).max() <= 3, (got, want, as_srgb)
    assert got[1] - got[0] > as_srgb[1] - as_srgb[0] + 10


def test_avif_nclx_codes_of_srgb_unstated_or_hdr_leave_the_pixels_as_decoded() -> None:
    colour_in = (60, 160, 70)
    base = decoded(avif_nclx(colour_in, primaries=1))
    assert not np.array_equal(decoded(avif_nclx(colour_in, primaries=12)), base)
    for primaries, transfer in ((2, 13), (2, 2), (12, 16), (12, 18), (9, 16), (12, 2)):
        # unstated primaries; PQ and HLG (HDR) transfers; an unstated transfer
        got = decoded(avif_nclx(colour_in, primaries, transfer))
        assert np.array_equal(got, base), (primaries, transfer)
    # an ICC profile comes first (Pillow writes nclx codes saying nothing beside it)
    tagged = encode(Image.new("RGB", (64, 64), colour_in), "AVIF", icc_profile=icc_profile())
    assert nclx_codes(tagged) == (2, 2)
    r, g, b = (int(v) for v in base[32, 32])  # as AV1 decodes them, then Adobe RGB's
    assert np.abs(decoded(tagged)[32, 32] - expected_srgb((r, g, b))).max() <= 3


def test_nclx_codes_are_read_from_the_primary_item_and_never_raise() -> None:
    data = avif_nclx((60, 160, 70), 12)
    assert nclx_codes(data) == (12, 13)
    assert nclx_codes(b"") is None and nclx_codes(data[:40]) is None
    at = data.index(b"ipma") + 4  # the associations: items no longer point at the properties
    cut = data[:at] + b"\0" * 4 + b"\0\0\0\0" + data[at + 8 :]
    assert nclx_codes(cut) is None
    for n in range(0, len(data), 7):  # cut anywhere: None or the codes, never an exception
        assert nclx_codes(data[:n]) in (None, (12, 13))


def test_white_and_gray_stay_neutral_through_a_profile_made_from_nclx_codes() -> None:
    """The primaries' white is adapted to D50 in cone space (Bradford): scaled in XYZ
    instead, white came out as (255, 246, 255) and gray 128 as (137, 123, 128)."""
    for make in (heic_nclx, avif_nclx):
        for level in (128, 255):
            gray = (level, level, level)
            as_srgb = decoded(make(gray, 1))[32, 32]
            for primaries in (12, 9):
                got = decoded(make(gray, primaries))[32, 32]
                assert np.abs(got - as_srgb).max() <= 1, (make, primaries, got, as_srgb)
