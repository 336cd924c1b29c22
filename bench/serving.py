"""Serving baseline on this machine: cold start, RSS after load, per-request latency.

Starts the real server (uvicorn subprocess) on the bundles in models/ and measures:
  * cold start: process spawn -> /readyz 200 (all bundles loaded and warmed)
  * RSS of the server process after load and after the requests
  * per-request latency for a 224x224 and a 12-megapixel JPEG made from a real photo:
    decode / preprocess / inference as reported by the server, and total as seen by the client.

Usage: .venv/bin/python -m bench.serving [--requests 30] [--models-dir models]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from PIL import Image

from bench.procs import free_port, stop, uvicorn_cmd

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "data" / "photos" / "matplotlib" / "grace_hopper.jpg"


def jpeg(size: tuple[int, int]) -> bytes:
    with Image.open(PHOTO) as im:
        img = im.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    args = ap.parse_args()
    if not PHOTO.exists():
        sys.exit(f"{PHOTO} missing; run scripts/fetch-data")

    port = free_port()
    env = dict(
        os.environ,
        IMGCLASS_MODELS_DIR=str(args.models_dir),
        IMGCLASS_ACCESS_LOG="false",
        IMGCLASS_DATA_DIR=str(ROOT / "data" / "bench-service"),
        IMGCLASS_LOG_LEVEL="WARNING",
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(uvicorn_cmd(port, "--log-level", "warning"), cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            healthy_at = ready_at = None
            while ready_at is None:
                if proc.poll() is not None:
                    sys.exit("server exited during start-up")
                try:
                    if healthy_at is None and client.get("/healthz").status_code == 200:
                        healthy_at = time.perf_counter() - t0
                    if client.get("/readyz").status_code == 200:
                        ready_at = time.perf_counter() - t0
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
            ps = psutil.Process(proc.pid)
            rss_loaded = ps.memory_info().rss / 2**20
            models = [m["name"] for m in client.get("/v1/models").json()["models"]]
            images = {"224x224": jpeg((224, 224)), "12MP 4000x3000": jpeg((4000, 3000))}
            rows = []
            for model in models:
                for label, data in images.items():
                    client.post(f"/v1/models/{model}/predict", content=data)  # warm path
                    dec, pre, inf, srv, tot = [], [], [], [], []
                    for _ in range(args.requests):
                        t = time.perf_counter()
                        r = client.post(f"/v1/models/{model}/predict", content=data)
                        tot.append((time.perf_counter() - t) * 1e3)
                        r.raise_for_status()
                        tm = r.json()["results"][0]["timings"]
                        dec.append(tm["decode_ms"])
                        pre.append(tm["preprocess_ms"])
                        inf.append(tm["inference_ms"])
                        srv.append(tm["total_ms"])
                    rows.append((model, label, len(data), dec, pre, inf, tot))
            rss_after = ps.memory_info().rss / 2**20
    finally:
        stop(proc)

    cpu = platform.processor() or platform.machine()
    print(
        f"\nimgclass serving baseline - {cpu}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print(
        f"models: {', '.join(models)}; {args.requests} sequential requests per row (raw JPEG body)\n"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| cold start to /healthz 200 | {healthy_at:.2f} s |")
    print(f"| cold start to /readyz 200 (all bundles loaded + warmed) | {ready_at:.2f} s |")
    print(f"| RSS after load | {rss_loaded:.0f} MiB |")
    print(f"| RSS after the requests | {rss_after:.0f} MiB |\n")
    print(
        "| model | image | bytes | decode ms p50 | preprocess ms p50 | inference ms p50 | total ms p50 | total ms p90 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for model, label, size, dec, pre, inf, tot in rows:
        print(
            f"| {model} | {label} | {size:,} | {statistics.median(dec):.2f} | {statistics.median(pre):.2f} "
            f"| {statistics.median(inf):.2f} | {statistics.median(tot):.2f} | {pct(tot, 0.9):.2f} |"
        )


if __name__ == "__main__":
    main()
