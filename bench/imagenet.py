"""imagenet bundle speed on this machine: onnxruntime latency and end-to-end request latency.

  * ORT: median session.run time at batch 1 and 8, 1 thread and onnxruntime's default, for
    models/imagenet and (when given or present) an INT8 variant; runs alternate between the
    models so that load from other processes hits them alike.
  * end to end: POST /v1/models/imagenet/predict of a 12-megapixel JPEG (a real photo upscaled
    to 4000x3000) through the app in-process (TestClient): client-side total and the server's
    decode / preprocess / inference split.

Usage: .venv/bin/python -m bench.imagenet [--runs 30] [--int8 models/imagenet-int8/model.onnx]
Timings go to stdout as tables, not into asserts. On a shared 2-core machine compare ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "data" / "photos" / "foolbox" / "imagenet_17_22.jpg"  # bald eagle, 512x512


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ort_latencies(models: dict[str, Path], batch: int, threads: int, runs: int) -> dict[str, float]:
    sessions = {}
    for name, path in models.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        sessions[name] = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    x = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype(np.float32)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(runs + 3):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"image": x})
            if i >= 3:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def big_jpeg(size: tuple[int, int] = (4000, 3000)) -> bytes:
    with Image.open(PHOTO) as im:
        img = im.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def end_to_end(models_dir: Path, name: str, data: bytes, runs: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            models_dir=models_dir,
            data_dir=Path(tmp),
            load_in_background=False,
            enabled_models=[name],
            access_log=False,
            log_level="WARNING",
        )
        # localhost: a Host the default IMGCLASS_ALLOWED_HOSTS answers (TestClient sends
        # "testserver", and every request was a 400 host-not-allowed, round 29)
        with TestClient(create_app(settings), base_url="http://localhost") as client:
            parts: dict[str, list[float]] = {
                k: [] for k in ("total_ms", "decode_ms", "preprocess_ms", "inference_ms")
            }
            for i in range(runs + 2):
                t0 = time.perf_counter()
                r = client.post(f"/v1/models/{name}/predict", content=data)
                total = (time.perf_counter() - t0) * 1e3
                r.raise_for_status()
                if i < 2:
                    continue
                t = r.json()["results"][0]["timings"]
                parts["total_ms"].append(total)
                for k in ("decode_ms", "preprocess_ms", "inference_ms"):
                    parts[k].append(float(t[k]))
            top = r.json()["results"][0]["predictions"][0]["label"]
    out = {k: statistics.median(v) for k, v in parts.items()}
    print(f"  ({name}: top-1 of the upscaled photo = {top!r})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--int8", type=Path, default=None, help="INT8 ONNX file to compare with")
    args = ap.parse_args()
    fp32 = args.models_dir / "imagenet" / "model.onnx"
    if not fp32.is_file() or not PHOTO.is_file():
        sys.exit(
            f"{fp32} or {PHOTO} missing; run scripts/fetch-data and scripts/build-imagenet-bundles"
        )
    models = {"fp32": fp32}
    int8 = args.int8 or args.models_dir / "imagenet-int8" / "model.onnx"
    if int8.is_file():
        models["int8"] = int8
    print(
        f"# imagenet bundle speed: {cpu_name()}, {os.cpu_count()} CPUs, onnxruntime {ort.__version__}"
    )
    print("\n## onnxruntime session.run, median ms")
    print(
        "| batch | threads | "
        + " | ".join(models)
        + (" | int8 speed-up |" if "int8" in models else "")
    )
    print("|---" * (len(models) + 2 + ("int8" in models)) + "|")
    for batch in (1, 8):
        for threads in (1, 0):
            runs = args.runs if batch == 1 else max(5, args.runs // 3)
            lat = ort_latencies(models, batch, threads, runs)
            cells = " | ".join(f"{lat[m]:.1f}" for m in models)
            ratio = f" | {lat['fp32'] / lat['int8']:.2f}x" if "int8" in lat else ""
            print(f"| {batch} | {threads or 'default'} | {cells}{ratio} |")
    data = big_jpeg()
    print(
        f"\n## POST /v1/models/imagenet/predict, 12 MP JPEG (4000x3000, {len(data) / 1e6:.1f} MB), median ms of {args.runs}"
    )
    e2e = end_to_end(args.models_dir, "imagenet", data, args.runs)
    print("| client total | server decode | server preprocess | server inference |")
    print("|---|---|---|---|")
    print(
        f"| {e2e['total_ms']:.1f} | {e2e['decode_ms']:.1f} | {e2e['preprocess_ms']:.1f} | {e2e['inference_ms']:.1f} |"
    )


if __name__ == "__main__":
    main()
