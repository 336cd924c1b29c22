"""Teach bench: time from the train call to the first successful prediction, and RSS per taught model.

Starts the real server (uvicorn subprocess, loopback) on the shipped bundles and a fresh data
folder, fills catalogs with real Fashion-MNIST test images (data/fashion-mnist, first N of each
class) embedded by the shipped `products` backbone (or `--backbone imagenet`), then for each size:
  * POST /v1/catalogs/{c}/train -> poll GET /v1/jobs/{id} every 50 ms -> the first 200 from
    POST /v1/models/{m}/predict on a held-out image (not in the catalog): the user's wait
  * the job's own phases and the held-out figures it reports (n, method)
and finally teaches 10 small models on one backbone and reports the server's RSS added per model
(after each has answered one prediction, so its head session and scheduler exist).

Usage: .venv/bin/python -m bench.teach [--backbone products] [--sizes 2x20,10x100] [--models 10]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from bench.procs import free_port, stop, uvicorn_cmd, wait_ready
from training.data import read_idx

ROOT = Path(__file__).resolve().parent.parent
FM = ROOT / "data" / "fashion-mnist"
NAMES = [
    "tshirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "boot",
]


def fm_images() -> tuple[np.ndarray, np.ndarray]:
    return read_idx(FM / "t10k-images-idx3-ubyte.gz"), read_idx(FM / "t10k-labels-idx1-ubyte.gz")


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def start(data: Path, backbone: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "IMGCLASS_DATA_DIR": str(data),
        "IMGCLASS_ENABLED_MODELS": f'["{backbone}"]',
        "IMGCLASS_ACCESS_LOG": "false",
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(uvicorn_cmd(port), env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/readyz", proc, 120)
    except BaseException:
        stop(proc)
        raise
    return proc, base


def fill(c: httpx.Client, catalog: str, backbone: str, per_class: dict[str, list[bytes]]) -> float:
    t0 = time.perf_counter()
    c.post("/v1/catalogs", json={"name": catalog, "model": backbone}).raise_for_status()
    for label, images in per_class.items():
        for s in range(0, len(images), 25):
            files = [
                ("file", (f"{i}.png", d, "image/png")) for i, d in enumerate(images[s : s + 25])
            ]
            c.post(
                f"/v1/catalogs/{catalog}/items", files=files, data={"label": label}
            ).raise_for_status()
    return time.perf_counter() - t0


def teach_to_first_prediction(
    c: httpx.Client, catalog: str, model: str, probe: bytes
) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = c.post(f"/v1/catalogs/{catalog}/train", json={"model": model})
    r.raise_for_status()
    url = r.headers["location"]
    while True:
        job = c.get(url).json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    t_job = time.perf_counter() - t0
    if job["status"] != "succeeded":
        raise SystemExit(f"job failed: {job}")
    while c.post(f"/v1/models/{model}/predict", content=probe).status_code != 200:
        time.sleep(0.02)
    return {"job": job, "job_s": t_job, "first_prediction_s": time.perf_counter() - t0}


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="products")
    ap.add_argument("--sizes", default="2x20,10x100")
    ap.add_argument("--models", type=int, default=10)
    args = ap.parse_args()
    x, y = fm_images()
    data = Path(tempfile.mkdtemp(prefix="teach-bench-"))
    proc, base = start(data, args.backbone)
    rows = []
    try:
        with httpx.Client(base_url=base, timeout=120) as c:
            for size in args.sizes.split(","):
                k, n = (int(v) for v in size.split("x"))
                per = {
                    NAMES[cl]: [png(x[i]) for i in np.flatnonzero(y == cl)[:n]] for cl in range(k)
                }
                probe = png(x[np.flatnonzero(y == 0)[n + 1]])  # a held-out t-shirt
                fill_s = fill(c, f"c{k}x{n}", args.backbone, per)
                out = teach_to_first_prediction(c, f"c{k}x{n}", f"m{k}x{n}", probe)
                m = out["job"]["result"]["metrics"]
                rows.append(
                    (
                        size,
                        k * n,
                        fill_s,
                        out["job_s"],
                        out["first_prediction_s"],
                        m["accuracy"],
                        m["n_samples"],
                        m["split"],
                    )
                )
            # RSS per taught model: 10 two-class heads on the one backbone.
            per = {NAMES[cl]: [png(x[i]) for i in np.flatnonzero(y == cl)[:10]] for cl in (7, 8)}
            fill(c, "rss", args.backbone, per)
            probe = png(x[np.flatnonzero(y == 8)[50]])
            c.post(f"/v1/models/{args.backbone}/predict", content=probe).raise_for_status()
            before = rss_mb(proc.pid)
            for i in range(args.models):
                teach_to_first_prediction(c, "rss", f"rss{i}", probe)
            after = rss_mb(proc.pid)
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)

    print(
        f"# bench/teach.py on {platform.machine()}, {os.cpu_count()} cores; backbone "
        f"{args.backbone!r}; Fashion-MNIST test images (first N per class), held-out probe "
        "image not in the catalog"
    )
    print()
    print(
        "| classes x images | items | fill catalog s | train call -> job done s | "
        "train call -> first prediction s | held-out accuracy | held-out n (method) |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, items, fill_s, job_s, first_s, acc, n, split in rows:
        print(
            f"| {size} | {items} | {fill_s:.1f} | {job_s:.2f} | {first_s:.2f} | "
            f"{acc:.3f} | {n} ({split}) |"
        )
    print()
    added = after - before
    print(
        f"RSS: {before:.1f} MB with the backbone served -> {after:.1f} MB after {args.models} "
        f"taught models answered one prediction each: +{added:.1f} MB, "
        f"{added / args.models:.2f} MB per taught model"
    )


if __name__ == "__main__":
    main()
