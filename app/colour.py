"""Colour profiles: a picture tagged with an RGB ICC profile other than sRGB is converted to sRGB.

Cameras write Adobe RGB, phones Display P3, and every bundle was trained on sRGB pixels (the
data sets carry no profile, or sRGB's). Read as if they were sRGB, such pictures look washed
out (Adobe RGB, P3 greens and reds less saturated) and a browser's preview of our JPEG, which
carries no profile, looked flat (round 40). Browsers convert; so does the server now, on the
reduced picture (at most about twice the model input, never the full-size one).

Only RGB profiles of displays, inputs and colour spaces are applied, to RGB or RGBA pictures;
sRGB profiles (by their description) are left alone, so those pixels stay bit for bit as
decoded; gray and CMYK profiles are not applied (CMYK is converted as before). A profile that
is larger than MAX_PROFILE_BYTES, damaged or otherwise unusable is ignored: the picture is read
as sRGB, as before. Transforms are built once per profile (a few recent ones kept).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from typing import Final

from PIL import Image, ImageCms

MAX_PROFILE_BYTES: Final = 1 << 20  # display and camera RGB profiles are a few KB
_KEPT: Final = 16
_CLASSES: Final = frozenset({"mntr", "scnr", "spac"})
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_transforms: OrderedDict[bytes, ImageCms.ImageCmsTransform | None] = OrderedDict()
_lock = threading.Lock()


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
    rgb = ImageCms.applyTransform(img.convert("RGB"), transform) or img.convert("RGB")
    rgb.putalpha(img.getchannel("A"))
    return rgb


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
