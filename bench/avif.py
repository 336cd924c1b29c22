"""AVIF against JPEG and PNG: the same picture, the same answers? And what an AVIF costs to
prepare, in time and memory, against the same picture as JPEG, in one run.

Pictures: every photo under data/photos except the 32x32 CIFAR and 28x28 Fashion-MNIST
thumbnails and the MNIST digits (the 20 labelled foolbox ImageNet photos and 13 other real
photos from PyPI packages; scripts/fetch-data), each with its longer side at 640 px, encoded as
PNG (lossless: the reference), JPEG (quality 90) and AVIF (quality 75 and 50). Printed:
imagenet's top-1 agreement of JPEG and of each AVIF with the PNG, and the top-5 accuracy of
each on the labelled ImageNet photos. Then one photo enlarged to 4, 8 and 12.5 MP (a phone's
4080x3072, under AVIF's 13 MP limit in a default server): the time to prepare it (median of
`--runs`) and the peak memory the preparation adds, each in a fresh child process (VmHWM
minus VmRSS before), as JPEG and AVIF.

Usage: .venv/bin/python -m bench.avif [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from app import imaging
from app.bundle import load_bundle
from app.runtime import OnnxModel, choose_providers
from bench.prepare_child import in_child

ROOT = Path(__file__).resolve().parent.parent
WAYS = {"JPEG q90": ("JPEG", {"quality": 90}), "AVIF q75": ("AVIF", {"quality": 75})}
WAYS["AVIF q50"] = ("AVIF", {"quality": 50})
SIZES = {"4 MP": (2448, 1632), "8 MP": (3456, 2304), "12.5 MP": (4080, 3072)}


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photos() -> list[tuple[str, Image.Image, int | None]]:
    out = []
    for p in sorted((ROOT / "data" / "photos").rglob("*")):
        if p.suffix not in (".jpg", ".png") or p.name.startswith(("cifar", "fashionMNIST")):
            continue
        if p.parent.name == "mnist" or p.name.startswith("mnist"):
            continue
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        s = 640 / max(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * s)), max(1, round(rgb.height * s))))
        label = int(p.stem.rsplit("_", 1)[1]) if p.name.startswith("imagenet_") else None
        out.append((p.name, rgb, label))
    return out


def answers(model: OnnxModel, datas: list[bytes]) -> np.ndarray:
    spec = model.bundle.metadata.input
    xs = [imaging.prepare(d, spec, imaging.ImageLimits()).array for d in datas]
    return np.concatenate([model.run(np.stack(xs[i : i + 8])).probs for i in range(0, len(xs), 8)])


def child_peak(data: bytes, tmp: Path) -> float:
    tmp.write_bytes(data)
    return in_child(tmp, 1)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    bundle = load_bundle(ROOT / "models" / "imagenet")
    model = OnnxModel(bundle, choose_providers("auto"), 1)
    pics = photos()
    ref = answers(model, [encode(im, "PNG") for _, im, _ in pics])
    labelled = [i for i, (_, _, lab) in enumerate(pics) if lab is not None]

    def top5(p: np.ndarray) -> int:
        return sum(pics[i][2] in np.argsort(-p[i])[:5] for i in labelled)

    print(f"{len(pics)} photos at 640 px ({len(labelled)} labelled ImageNet photos)")
    print(f"{'as':10s} {'top-1 = PNG':>12s} {'top-5 right':>12s} {'bytes':>10s}")
    print(f"{'PNG':10s} {len(pics):>12d} {top5(ref):>12d}")
    for name, (fmt, kw) in WAYS.items():
        datas = [encode(im, fmt, **kw) for _, im, _ in pics]
        got = answers(model, datas)
        same = int((got.argmax(1) == ref.argmax(1)).sum())
        print(f"{name:10s} {same:>12d} {top5(got):>12d} {sum(map(len, datas)):>10,d}")
    big = pics[0][1]
    tmp = Path(f"/tmp/bench-avif-{time.time_ns()}")
    print(f"\n{'one photo enlarged':20s} {'prepare ms':>11s} {'+peak MiB':>10s}")
    spec = bundle.metadata.input
    try:
        for size_name, size in SIZES.items():
            img = big.resize(size, Image.Resampling.BICUBIC)
            for fmt in ("JPEG", "AVIF"):
                data = encode(img, fmt, quality=90 if fmt == "JPEG" else 75, speed=8)
                times = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    imaging.prepare(data, spec, imaging.ImageLimits())
                    times.append(time.perf_counter() - t)
                ms = statistics.median(times) * 1e3
                print(f"{size_name + ' ' + fmt:20s} {ms:>11.0f} {child_peak(data, tmp):>10.0f}")
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
