"""How far a decoded picture is reduced before anything else: the side it keeps for a model,
the box-filter factor, and a large JPEG's DCT-scaled decode (the draft) with the work it is
charged."""

from __future__ import annotations

from typing import Final

from PIL import Image

from app.bundle import InputSpec
from app.decode_guard import NORMAL_SCANS
from app.trim import FRAME_MAX_PIXELS

# Decoded images are reduced by a box filter to no less than this many times the model input
# before any further work. A JPEG at least twice that (4x the input) on its short side is first
# decoded at the smallest DCT scale, 1/4 or 1/8, that keeps both sides >= the model input: a
# 4000x3000 photo at 500x375 for a 224 model, 13 instead of 18 ms to prepare on this CPU. One
# only 2-4x the input is decoded in full (its only scale, 1/2, saved 1.6 ms on a 640x480 photo
# but moved imagenet's answers on the labelled photos its card is measured on). Fidelity
# against an exact decode: `python -m bench.draft_scale` (docs/performance.md).
_DRAFT_FACTOR: Final = 2
_TRIM_ZOOM: Final = 4  # see model_side: products (28 px) keeps >= 112 px, 224 unless drafted


def model_side(spec: InputSpec) -> int:
    """The side a decoded picture keeps at least: the model input's (either side may end up as
    either after rotation), 4x that for a model that trims, which crops to the object first
    and may keep only a small part of the picture (a third of a 672 px picture's side keeps
    its thin lines; at 1x the object went to 28 px before trimming)."""
    return max(spec.width, spec.height) * (_TRIM_ZOOM if spec.trim else 1)


def reduction(size: tuple[int, int], spec: InputSpec) -> int:
    """The box-filter reduction of a decoded picture: its short side kept at twice
    `model_side`. A thin giant for a model that letterboxes (its long side is what the model
    sees at full scale) is reduced by its long side instead when it would stay over
    FRAME_MAX_PIXELS, where trimming skips it anyway: a 100x400,000 PNG no longer exists at
    full size (+200 MiB for digits or products) to become a few pixels wide."""
    side = model_side(spec) * _DRAFT_FACTOR
    factor = max(1, min(size) // side)
    w, h = size
    if spec.resize.mode == "letterbox" and (w // factor) * (h // factor) > FRAME_MAX_PIXELS:
        factor = max(factor, max(size) // side)
    return factor


def draft_and_cost(
    img: Image.Image,
    fmt: str,
    scans: int,
    spec: InputSpec,
    rgb: bool = True,
    lossless: bool = False,
) -> int:
    """Set up a reduced JPEG decode where it helps (never for a lossless JPEG: libjpeg has no
    DCT to scale it in); return the work (pixels) to charge."""
    w, h = img.size
    side = model_side(spec)
    if fmt != "JPEG":
        return w * h
    thin_giant = w * h > FRAME_MAX_PIXELS and min(w, h) >= 2 * side
    if not lossless and (min(w, h) >= 2 * _DRAFT_FACTOR * side or thin_giant):
        # DCT-domain downscale: the decoded size stays >= the model input on both sides. A
        # thin giant (65,500x610) too, at 1/2: decoded whole at full size, then turned by its
        # EXIF orientation, it added 306 MiB to a worker (round 36's attack).
        img.draft("RGB" if rgb else "L", (side, side))
    if img.info.get("progressive") or scans > NORMAL_SCANS:
        # A progressive decode passes over every coefficient once per scan, drafted or not.
        return w * h * max(1, -(-scans // NORMAL_SCANS))
    return img.size[0] * img.size[1]
