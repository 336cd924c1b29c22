"""JPEG DCT scaling: what decoding a large JPEG at 1/4 or 1/8 costs in fidelity and saves in
time, for the `imagenet` bundle (224x224), in one run.

The same JPEG bytes prepared three ways with the server's own ingestion (app.imaging):
  * exact: decoded in full, no box reduction, one resize to the model input;
  * 2x: a JPEG >= 4x the input on its short side DCT-scaled to no less than twice the input
    (the server until 2026-12-02);
  * served: the same JPEGs DCT-scaled to no less than the input (the server since).
Pictures: every picture under data/photos except the 32x32 CIFAR and 28x28 Fashion-MNIST
thumbnails (the 20 labelled foolbox ImageNet photos, 20 MNIST digits and 13 other real photos
from PyPI packages; scripts/fetch-data), each re-encoded as a baseline JPEG (quality 90) with
its longer side at 640, 1600 and 4000 px. Printed: imagenet's top-1 agreement with the exact
path (all, and where the exact top-1 probability is >= 0.5), the largest change of any class
probability per picture, top-5 on the labelled ImageNet photos, and the time to prepare
bench.load's 640x480 and 12 MP photos (median of interleaved single-thread runs).

Usage: .venv/bin/python -m bench.draft_scale [--runs 30]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from app import imaging, reduction
from app.bundle import InputSpec, load_bundle
from app.runtime import OnnxModel, choose_providers
from bench.load import images

ROOT = Path(__file__).resolve().parent.parent
SIDES = (640, 1600, 4000)


def _plan_exact(
    img: Any, fmt: str, scans: int, spec: InputSpec, rgb: bool = True, lossless: bool = False
) -> int:
    return int(img.size[0] * img.size[1])


def _plan_2x(
    img: Any, fmt: str, scans: int, spec: InputSpec, rgb: bool = True, lossless: bool = False
) -> int:
    side = max(spec.width, spec.height)
    if fmt == "JPEG" and not lossless and min(img.size) >= 4 * side:
        img.draft("RGB" if rgb else "L", (2 * side, 2 * side))
    return int(img.size[0] * img.size[1])


WAYS: dict[str, Callable[..., int] | None] = {"exact": _plan_exact, "2x": _plan_2x, "served": None}


@contextmanager
def way(name: str) -> Iterator[None]:
    """app.imaging with another decode plan (exact: no box reduction either)."""
    saved = imaging.draft_and_cost, reduction._DRAFT_FACTOR
    plan = WAYS[name]
    if plan is not None:
        imaging.draft_and_cost = plan
    if name == "exact":
        reduction._DRAFT_FACTOR = 1_000_000  # type: ignore[misc]
    try:
        yield
    finally:
        imaging.draft_and_cost, reduction._DRAFT_FACTOR = saved  # type: ignore[misc]


def pictures() -> list[tuple[str, int, bytes, int | None]]:
    """(name, longer side, JPEG bytes, ImageNet label or None)."""
    src = sorted(
        p
        for p in (ROOT / "data" / "photos").rglob("*")
        if p.suffix in (".jpg", ".png") and not p.name.startswith(("cifar", "fashionMNIST"))
    )
    out = []
    for p in src:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        label = int(p.stem.rsplit("_", 1)[1]) if p.name.startswith("imagenet_") else None
        for side in SIDES:
            s = side / max(rgb.size)
            size = (max(1, round(rgb.width * s)), max(1, round(rgb.height * s)))
            buf = io.BytesIO()
            rgb.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
            out.append((p.name, side, buf.getvalue(), label))
    return out


def probs(model: OnnxModel, spec: InputSpec, data: list[bytes]) -> npt.NDArray[np.float32]:
    xs = [imaging.prepare(d, spec, imaging.ImageLimits()).array for d in data]
    return np.concatenate([model.run(np.stack(xs[i : i + 8])).probs for i in range(0, len(xs), 8)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    bundle = load_bundle(ROOT / "models" / "imagenet")
    model = OnnxModel(bundle, choose_providers("auto"), 1)
    spec = bundle.metadata.input
    pics = pictures()
    data = [p[2] for p in pics]
    got = {}
    for name in WAYS:
        with way(name):
            got[name] = probs(model, spec, data)
    exact = got["exact"]
    top1 = exact.argmax(1)
    sure = exact.max(1) >= 0.5
    labelled = [i for i, p in enumerate(pics) if p[3] is not None]
    print(
        f"{len(pics) // len(SIDES)} pictures x {len(SIDES)} sizes = {len(pics)} JPEGs (quality 90)"
    )
    print("| way | top-1 = exact | where exact top-1 p >= 0.5 | per size (640/1600/4000) "
          "| max abs dP per picture: median / p90 / max | top-5, labelled ImageNet |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, p in got.items():
        same = p.argmax(1) == top1
        dp = np.abs(p - exact).max(1)
        per = "/".join(str(int(same[[q[1] == s for q in pics]].sum())) for s in SIDES)
        top5 = sum(pics[i][3] in np.argsort(-p[i])[:5] for i in labelled)
        print(f"| {name} | {same.sum()}/{len(pics)} | {same[sure].sum()}/{sure.sum()} | {per} "
              f"| {np.median(dp):.4f} / {np.quantile(dp, 0.9):.4f} / {dp.max():.4f} "
              f"| {top5}/{len(labelled)} |")  # fmt: skip
    photos = images()
    times: dict[tuple[str, str], list[float]] = {(w, k): [] for w in WAYS for k in photos}
    limits = imaging.ImageLimits()
    for _ in range(args.runs):
        for name in WAYS:
            with way(name):
                for key, jpeg in photos.items():
                    t0 = time.perf_counter()
                    imaging.prepare(jpeg, spec, limits)
                    times[(name, key)].append(time.perf_counter() - t0)
    print(f"\nprepare, ms per picture (median of {args.runs} interleaved runs, 1 thread):")
    print("| way | " + " | ".join(photos) + " |")
    print("|---|" + "---|" * len(photos))
    for name in WAYS:
        cells = " | ".join(f"{1000 * float(np.median(times[(name, k)])):.2f}" for k in photos)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
