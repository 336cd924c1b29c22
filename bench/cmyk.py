"""CMYK pictures with a CMYK profile (app/colour.py): what converting by the profile costs, and
how far reducing in CMYK before converting moves the colours.

1. Time to decode (app.imaging.decode, a 224x224 RGB model) a 12 MP and a 40 MP CMYK JPEG,
   with and without the CMYK profile of tests/cmyk_profile.py (median and min of `--runs`);
   and what converting every decoded pixel by the profile would have cost instead (the
   drafted picture, and a whole 40 MP one as a TIFF, which has no drafted decode).
2. Every RGB photo under data/photos at least 300 px on its short side, turned into inks
   (70 % gray replacement): converted by the profile then reduced, against reduced in CMYK
   then converted (what the server does), at reductions 2, 4 and 8: the difference in sRGB
   levels and in dE76.

Usage: .venv/bin/python -m bench.cmyk [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from app.bundle import InputSpec
from app.image_limits import ImageLimits
from app.imaging import decode
from tests.cmyk_profile import cmyk_profile

ROOT = Path(__file__).resolve().parent.parent
SPEC = InputSpec(name="image", height=224, width=224, channels=3, color="rgb")
SIZES = {"12 MP": (4000, 3000), "40 MP": (7300, 5475)}
SRGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
)
D65 = np.array([0.9505, 1.0, 1.089])


def inks(rgb: Image.Image) -> Image.Image:
    """A plausible CMYK separation: 70 % of the gray component replaced by black."""
    a = np.asarray(rgb.convert("RGB")).astype(float) / 255
    k = np.min(1 - a, axis=-1, keepdims=True) * 0.7
    cmy = (1 - a - k) / np.maximum(1 - k, 1e-6)
    return Image.fromarray(
        np.rint(np.dstack([np.clip(cmy, 0, 1), k]) * 255).astype(np.uint8), "CMYK"
    )


def transform() -> ImageCms.ImageCmsTransform:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(cmyk_profile()))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return ImageCms.buildTransform(
        profile, srgb, "CMYK", "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL
    )


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def cost(runs: int) -> None:
    photo = Image.open(ROOT / "data/photos/imgaug/quokka.jpg")
    t = transform()
    print(f"decode for a 224 model, ms (median / min of {runs}); 1 thread of this CPU")
    print("| picture | no profile | CMYK profile | every drafted pixel converted |")
    print("| --- | --- | --- | --- |")
    for name, size in SIZES.items():
        cmyk = inks(photo.resize(size, Image.Resampling.BILINEAR))
        files = {}
        for icc in (None, cmyk_profile()):
            buf = io.BytesIO()
            cmyk.save(buf, "JPEG", quality=90, **({"icc_profile": icc} if icc else {}))
            files[icc is not None] = buf.getvalue()
        row = [timed(partial(decode, d, SPEC, ImageLimits()), runs) for d in files.values()]
        drafted = Image.open(io.BytesIO(files[False]))
        drafted.draft("RGB", (224, 224))
        drafted.load()
        every = timed(partial(ImageCms.applyTransform, drafted, t), runs)
        cells = [f"{m:.0f} / {lo:.0f}" for m, lo in (*row, every)]
        print(
            f"| {name} CMYK JPEG | {cells[0]} | {cells[1]} | {cells[2]} ({drafted.size[0]}x"
            f"{drafted.size[1]}) |"
        )
        if name == "40 MP":
            whole = timed(partial(ImageCms.applyTransform, cmyk, t), 1)[0]
            print(
                f"(the whole 40 MP picture converted by the profile, as a TIFF would be: "
                f"{whole:.0f} ms)"
            )


def lab(img: Image.Image) -> np.ndarray:
    v = np.asarray(img).astype(float) / 255
    xyz = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4) @ SRGB_TO_XYZ.T / D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.dstack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])]
    )


def difference() -> None:
    t = transform()
    files = []
    for path in sorted((ROOT / "data/photos").glob("*/*")):
        with Image.open(path) as img:
            if img.mode == "RGB" and min(img.size) >= 300:
                files.append(path)
    print(f"\nconverted then reduced vs reduced in CMYK then converted, {len(files)} photos")
    print("| reduction | levels mean | levels p99 | levels max | dE76 mean | dE76 p99 | dE76 max |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for factor in (2, 4, 8):
        levels, de = [], []
        for path in files:
            c = inks(Image.open(path))
            c = c.crop((0, 0, c.width // factor * factor, c.height // factor * factor))
            converted, reduced = ImageCms.applyTransform(c, t), c.reduce(factor)
            after = ImageCms.applyTransform(reduced, t)
            assert converted is not None and after is not None  # not in place
            first = converted.reduce(factor)
            levels.append(np.abs(np.asarray(first).astype(int) - np.asarray(after)).max(-1).ravel())
            de.append(np.sqrt(((lab(first) - lab(after)) ** 2).sum(-1)).ravel())
        lv, d = np.concatenate(levels), np.concatenate(de)
        print(
            f"| {factor} | {lv.mean():.2f} | {np.percentile(lv, 99):.0f} | {lv.max()} | "
            f"{d.mean():.2f} | {np.percentile(d, 99):.2f} | {d.max():.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cost(args.runs)
    difference()


if __name__ == "__main__":
    main()
