"""Colour profiles: a picture tagged with an RGB ICC profile other than sRGB is converted to sRGB.

Cameras write Adobe RGB, phones Display P3, and every bundle was trained on sRGB pixels (the
data sets carry no profile, or sRGB's). Read as if they were sRGB, such pictures look washed
out (Adobe RGB, P3 greens and reds less saturated) and a browser's preview of our JPEG, which
carries no profile, looked flat (round 40). Browsers convert; so does the server now, on the
reduced picture (at most about twice the model input, never the full-size one).

A HEIC may state its colour space as `nclx` codes (primaries and transfer, ISO/IEC 23091-2)
instead of a profile: Display P3 or BT.2020 primaries with the sRGB or BT.709 transfer are
converted alike, through a profile made from those primaries (`profile_of`); HDR transfers (PQ,
HLG) are not converted.

Only RGB profiles of displays, inputs and colour spaces are applied, to RGB or RGBA pictures;
sRGB profiles (by their description) are left alone, so those pixels stay bit for bit as
decoded; gray and CMYK profiles are not applied (CMYK is converted as before). A profile that
is larger than MAX_PROFILE_BYTES, damaged or otherwise unusable is ignored: the picture is read
as sRGB, as before. Transforms are built once per profile (a few recent ones kept).
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from PIL import Image, ImageCms

MAX_PROFILE_BYTES: Final = 1 << 20  # display and camera RGB profiles are a few KB
_KEPT: Final = 16
_CLASSES: Final = frozenset({"mntr", "scnr", "spac"})
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_transforms: OrderedDict[bytes, ImageCms.ImageCmsTransform | None] = OrderedDict()
_lock = threading.Lock()


# nclx codes: primaries read as sRGB's (BT.709) or unstated; transfers drawn like sRGB's
_SRGB_PRIMARIES: Final = frozenset({1, 2})
_SRGB_LIKE_TRANSFER: Final = frozenset({1, 6, 13, 14, 15})
_D50: Final = np.array([0.9642, 1.0, 0.8249])
_BRADFORD: Final = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def profile_of(info: Mapping[Any, object]) -> bytes | None:
    """The colour profile a decoded picture's `info` carries: its ICC profile, else one made
    from its HEIF `nclx` codes when they say a space other than sRGB; None for sRGB."""
    icc = info.get("icc_profile")
    if isinstance(icc, bytes) and icc:
        return icc
    nclx = info.get("nclx_profile")
    if not isinstance(nclx, Mapping):
        return None
    primaries, transfer = nclx.get("color_primaries"), nclx.get("transfer_characteristics")
    if primaries in _SRGB_PRIMARIES or transfer not in _SRGB_LIKE_TRANSFER:
        return None
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
    cone = _BRADFORD @ np.diag((_BRADFORD @ _D50) / (_BRADFORD @ white))
    adapted = np.linalg.inv(_BRADFORD) @ cone @ to_xyz
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


def to_srgb(img: Image.Image, icc: object) -> Image.Image:
    """`img` in sRGB: a converted copy when `icc` (the picture's embedded profile) is an RGB
    profile other than sRGB, else `img` itself."""
    if img.mode not in ("RGB", "RGBA") or not isinstance(icc, bytes):
        return img
    if not icc or len(icc) > MAX_PROFILE_BYTES:
        return img
    transform = _transform(icc)
    if transform is None:
        return img
    if img.mode == "RGB":
        return ImageCms.applyTransform(img, transform) or img
    rgb = img.convert("RGB")
    out = ImageCms.applyTransform(rgb, transform) or rgb
    out.putalpha(img.getchannel("A"))
    return out


def _transform(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    key = hashlib.sha256(icc).digest()
    with _lock:
        if key in _transforms:
            _transforms.move_to_end(key)
            return _transforms[key]
    made = _build(icc)
    with _lock:
        _transforms[key] = made
        while len(_transforms) > _KEPT:
            _transforms.popitem(last=False)
    return made


def _build(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        core = profile.profile
        if core.xcolor_space != "RGB " or core.device_class not in _CLASSES:
            return None
        if "srgb" in (core.profile_description or "").lower():
            return None  # the space the pixels are read in already
        # NOCACHE: one transform is applied from several threads at once
        return ImageCms.buildTransform(
            profile,
            _SRGB,
            "RGB",
            "RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            flags=ImageCms.Flags.NOCACHE,
        )
    except Exception:  # littlecms refuses a damaged profile with several error types
        return None
