"""Colour profiles: a picture tagged with an RGB or CMYK ICC profile other than sRGB is converted
to sRGB.

Cameras write Adobe RGB, phones Display P3, and every bundle was trained on sRGB pixels (the
data sets carry no profile, or sRGB's). Read as if they were sRGB, such pictures look washed
out (Adobe RGB, P3 greens and reds less saturated) and a browser's preview of our JPEG, which
carries no profile, looked flat (round 40). Browsers convert; so does the server now, on the
reduced picture (at most about twice the model input, never the full-size one).

A HEIC or AVIF may state its colour space as `nclx` codes (primaries and transfer, ITU-T H.273)
instead of a profile: Display P3, BT.2020 and the other primaries H.273 lists, with the sRGB or
BT.709 transfer, are converted alike, through a profile made from those primaries
(`profile_of`); HDR transfers (PQ, HLG) are not converted.

Only RGB profiles of displays, inputs and colour spaces are applied to RGB or RGBA pictures;
sRGB profiles (by their description) are left alone, so those pixels stay bit for bit as
decoded. A CMYK picture (print: JPEG, TIFF) with a CMYK profile is reduced in CMYK and the
small picture converted by its profile (`profile_for`; `python -m bench.cmyk`): converting
every pixel first cost about 1 s for a 40 MP picture (a TIFF: no drafted decode), while
reducing first moved the colours of 29 photos by 0.3 dE76 on average, 1.2-1.7 at the 99th
percentile (reduced by 2 to 8). A JPEG is drafted first, so for a 224 model both ways convert
the drafted picture: +7 ms at 12 MP, +22 ms at 40 MP. Gray profiles are not applied. A profile
that is larger than MAX_PROFILE_BYTES, damaged, of another colour space than the picture,
costlier to build than any real profile (app/icc_screen.py) or otherwise unusable is ignored: the picture is read as sRGB (CMYK by Pillow's own conversion),
as before. Transforms are built once per profile (a few recent ones kept). Intent: perceptual;
littlecms then maps a CMYK profile's black (all inks) to sRGB's black, where relative
colorimetric alone left the test profile's at (25, 32, 25).
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final, TypeGuard

import numpy as np
from PIL import Image, ImageCms

from app.icc_screen import too_complex

logger = logging.getLogger(__name__)

MAX_PROFILE_BYTES: Final = 1 << 20  # display and camera RGB profiles are a few KB
_KEPT: Final = 16
# device classes applied: displays, inputs, colour spaces; for CMYK, printers ("output") too
_CLASSES: Final = {
    "RGB": frozenset({"mntr", "scnr", "spac"}),
    "CMYK": frozenset({"prtr", "scnr", "spac"}),
}
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_transforms: OrderedDict[bytes, ImageCms.ImageCmsTransform | None] = OrderedDict()  # per mode
_lock = threading.Lock()


# nclx codes: primaries read as sRGB's (BT.709) or unstated; transfers drawn like sRGB's
_SRGB_PRIMARIES: Final = frozenset({1, 2})
_SRGB_LIKE_TRANSFER: Final = frozenset({1, 6, 13, 14, 15})
_D65, _C = (0.3127, 0.3290), (0.310, 0.316)
# H.273 colour_primaries -> (x, y) of red, green, blue and white (1, 2: sRGB's, unstated)
_BT601 = ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070), _D65)
_P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
_PRIMARIES: Final[dict[int, tuple[tuple[float, float], ...]]] = {
    4: ((0.67, 0.33), (0.21, 0.71), (0.14, 0.08), _C),  # BT.470 System M
    5: ((0.64, 0.33), (0.29, 0.60), (0.15, 0.06), _D65),  # BT.470 System B, G
    6: _BT601,  # BT.601 525 lines
    7: _BT601,  # SMPTE 240M
    8: ((0.681, 0.319), (0.243, 0.692), (0.145, 0.049), _C),  # generic film
    9: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), _D65),  # BT.2020, BT.2100
    11: (*_P3, (0.314, 0.351)),  # SMPTE RP 431-2 (DCI-P3)
    12: (*_P3, _D65),  # SMPTE EG 432-1 (Display P3)
    22: ((0.630, 0.340), (0.295, 0.605), (0.155, 0.077), _D65),  # EBU Tech. 3213-E
}
_D50: Final = np.array([0.9642, 1.0, 0.8249])
_BRADFORD: Final = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def profile_of(info: Mapping[Any, object], codes: tuple[int, int] | None = None) -> bytes | None:
    """The colour profile a decoded picture's `info` carries: its ICC profile, else one made
    from its HEIF `nclx` codes, or from `codes` (an AVIF's colour primaries and transfer,
    app/nclx.py), when they say a space other than sRGB; None for sRGB."""
    icc = info.get("icc_profile")
    if isinstance(icc, bytes) and icc:
        return icc
    nclx = info.get("nclx_profile")
    if isinstance(nclx, Mapping):
        primaries, transfer = nclx.get("color_primaries"), nclx.get("transfer_characteristics")
    elif codes is not None:
        primaries, transfer = codes
    else:
        return None
    if primaries in _SRGB_PRIMARIES or transfer not in _SRGB_LIKE_TRANSFER:
        return None
    if not isinstance(nclx, Mapping):
        listed = _PRIMARIES.get(primaries) if isinstance(primaries, int) else None
        return None if listed is None else _matrix_profile(list(listed))
    try:
        xy = [
            (float(nclx[f"color_primary_{c}_x"]), float(nclx[f"color_primary_{c}_y"]))
            for c in ("red", "green", "blue", "white")
        ]
    except (KeyError, TypeError, ValueError):
        return None
    return _matrix_profile(xy) if all(0 < y <= 1 and 0 <= x <= 1 for x, y in xy) else None


def _matrix_profile(xy: list[tuple[float, float]]) -> bytes | None:
    """An ICC v4 display profile: these primaries and white, sRGB's tone curve, adapted to D50
    (Bradford) as ICC profiles store them."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in xy])
    prim, white = xyz[:3].T, xyz[3]
    try:
        to_xyz = prim * np.linalg.solve(prim, white)  # columns: R, G, B at full strength
    except np.linalg.LinAlgError:
        return None
    cone = np.diag((_BRADFORD @ _D50) / (_BRADFORD @ white))  # scaled as cone responses
    adapted = np.linalg.inv(_BRADFORD) @ cone @ _BRADFORD @ to_xyz
    if not np.all(np.isfinite(adapted)) or np.abs(adapted).max() > 4:
        return None  # primaries in a line or beyond any real colour: no profile

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(float(v) * 65536))

    desc = "imgclass nclx".encode("utf-16-be")
    para = (
        b"para\0\0\0\0"
        + struct.pack(">H", 3)
        + b"\0\0"
        + b"".join(s15(v) for v in (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045))
    )
    tags = {
        b"desc": b"mluc\0\0\0\0"
        + struct.pack(">II", 1, 12)
        + b"enUS"
        + struct.pack(">II", len(desc), 28)
        + desc,
        b"wtpt": b"XYZ \0\0\0\0" + b"".join(s15(v) for v in _D50),
        b"rXYZ": b"XYZ \0\0\0\0" + b"".join(s15(v) for v in adapted[:, 0]),
        b"gXYZ": b"XYZ \0\0\0\0" + b"".join(s15(v) for v in adapted[:, 1]),
        b"bXYZ": b"XYZ \0\0\0\0" + b"".join(s15(v) for v in adapted[:, 2]),
        b"rTRC": para,
        b"gTRC": para,
        b"bTRC": para,
    }
    table, body = b"", b""
    start = 128 + 4 + 12 * len(tags)
    for name, data in tags.items():
        table += name + struct.pack(">II", start + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    header = (
        struct.pack(">I", start + len(body))
        + b"\0" * 4
        + bytes([4, 0x30, 0, 0])
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + b"".join(s15(v) for v in _D50)
        + b"\0" * 48
    )
    return header + struct.pack(">I", len(tags)) + table + body


def profile_for(mode: str, icc: bytes | None) -> tuple[bytes | None, bool]:
    """(the profile `to_srgb` is to apply to a picture decoded in `mode`, whether the picture
    is reduced in CMYK). A CMYK picture keeps its profile only where it converts CMYK; any
    other is ignored (it describes RGB pixels, not Pillow's conversion of CMYK ones)."""
    if mode != "CMYK":
        return icc, False
    return (icc, True) if _transform(icc, "CMYK") is not None else (None, False)


def to_srgb(img: Image.Image, icc: object) -> Image.Image:
    """`img` in sRGB: a converted copy when `icc` (the picture's embedded profile) is an RGB
    profile other than sRGB, or a CMYK one for a CMYK `img`, else `img` itself (a CMYK `img`
    whose profile does not convert: Pillow's own conversion)."""
    if img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    transform = _transform(icc, "CMYK" if img.mode == "CMYK" else "RGB")
    if transform is None:
        return img.convert("RGB") if img.mode == "CMYK" else img
    source = img.convert("RGB") if img.mode == "RGBA" else img
    try:
        out = ImageCms.applyTransform(source, transform) or source
    except ImageCms.PyCMSError:  # not seen; the picture as decoded rather than a 500
        return img.convert("RGB") if img.mode == "CMYK" else img
    if img.mode == "RGBA":
        out.putalpha(img.getchannel("A"))
    return out


def _usable(icc: object) -> TypeGuard[bytes]:
    return isinstance(icc, bytes) and 0 < len(icc) <= MAX_PROFILE_BYTES


def _transform(icc: object, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The cached transform of profile `icc` to sRGB for pictures in `mode` ('RGB' or 'CMYK');
    None where the profile is not one to apply."""
    if not _usable(icc):
        return None
    key = hashlib.sha256(icc).digest() + mode.encode()
    with _lock:
        if key in _transforms:
            _transforms.move_to_end(key)
            return _transforms[key]
    made = _build(icc, mode)
    with _lock:
        _transforms[key] = made
        while len(_transforms) > _KEPT:
            _transforms.popitem(last=False)
    return made


def _build(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    if (why := too_complex(icc)) is not None:
        logger.info("colour profile ignored (read as sRGB): %s", why)
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        core = profile.profile
        if core.xcolor_space != mode.ljust(4) or core.device_class not in _CLASSES[mode]:
            return None
        if mode == "RGB" and "srgb" in (core.profile_description or "").lower():
            return None  # the space the pixels are read in already
        # NOCACHE: one transform is applied from several threads at once
        return ImageCms.buildTransform(
            profile,
            _SRGB,
            mode,
            "RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            flags=ImageCms.Flags.NOCACHE,
        )
    except Exception:  # littlecms refuses a damaged profile with several error types
        return None
