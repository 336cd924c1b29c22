"""Serving throughput against this machine's ceiling, in one run (issue #15).

(a) ceiling: the project's own ingestion (app.imaging.prepare) + runtime (app.runtime.OnnxModel)
    in-process, no HTTP, best of several configurations: P parallel decode+inference pipelines
    x T onnxruntime threads x batch B.
(b) server: `python -m app` with its default settings (as scripts/serve starts it) over HTTP,
    at 1, 8 and 32 clients (`--clients 1 8 32 64` adds 64), for each model and image, driven
    by two real load generators in turn (loopback, a prebuilt multipart body, bench/clients.py):
    - Debian `hey` (-z seconds): req/s (200s only), p50/p99 of the 200s, 503s and how fast
      they came back (p50/p99), other statuses, extra TCP dials (hey's CSV drops transport
      errors; a reset shows up as a new dial), p99 of a /readyz probe sent every 100 ms on a
      new connection during the cell;
    - Debian `wrk` (one thread, -d seconds): req/s of 2xx, non-2xx and socket errors. It costs
      about a quarter of hey's CPU per request, and on 2 cores the client's CPU is CPU the
      server does not get.
    Each req/s is also given as a ratio of the ceiling, measured with the best configuration
    right before and right after the cell (the mean of the two).
(c) peer: FastAPI + Keras `predict` (bench/keras_peer.py, imagenet only: it needs the train
    extra) on the same image at the same clients, reported as imgclass / peer.

Images: one real photo (imgaug's quokka.jpg, 960x643) re-encoded here as a 640x480 JPEG and, upscaled,
as a 4000x3000 (12 MP) JPEG, both baseline quality 90. The generator shares the cores with the server:
compare the ratios inside one run, not absolute req/s across machines.

Usage: .venv/bin/python -m bench.load [--models imagenet products] [--images 640 12mp]
         [--clients 1 8 32 64] [--seconds 8] [--skip server peer] [--peer-clients 8]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from app.batching import cpu_count
from app.bundle import load_bundle
from app.imaging import ImageLimits, prepare
from app.runtime import OnnxModel, choose_providers
from bench.clients import BOUNDARY, Cell, ProbeWatch, WrkCell, hey, wrk
from bench.procs import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "data" / "photos" / "imgaug" / "quokka.jpg"  # a real 960x643 photo


def images() -> dict[str, bytes]:
    if not PHOTO.is_file():
        sys.exit(f"{PHOTO} missing; run scripts/fetch-data")
    out = {}
    with Image.open(PHOTO) as im:
        rgb = im.convert("RGB")
    for key, size in (("640", (640, 480)), ("12mp", (4000, 3000))):
        buf = io.BytesIO()
        rgb.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        out[key] = buf.getvalue()
    return out


def multipart(data: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"'
        "\r\nContent-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


# -- (a) in-process ceiling -------------------------------------------------------------------


def ceiling_configs() -> list[tuple[int, int, int]]:
    cores = cpu_count()
    configs = {(cores, 1, 1), (1, cores, 1), (1, cores, 4), (cores, 1, 4), (cores * 2, 1, 1)}
    return sorted(configs)


def in_process(model_dir: Path, data: bytes, p: int, t: int, b: int, seconds: float) -> float:
    """img/s of P threads each looping prepare x B -> one forward pass, T onnxruntime threads."""
    bundle = load_bundle(model_dir)
    model = OnnxModel(bundle, choose_providers("auto"), t)
    spec, limits = bundle.metadata.input, ImageLimits()
    for _ in range(2):
        model.run(np.stack([prepare(data, spec, limits).array for _ in range(b)]))
    counts = [0] * p
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            arrays = [prepare(data, spec, limits).array for _ in range(b)]
            model.run(arrays[0][None] if b == 1 else np.stack(arrays))
            counts[i] += b

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(p)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(counts) / (time.perf_counter() - t0)


def _pair(a: float, b: float) -> str:
    return "-" if a != a else f"{a:.0f} / {b:.0f}"  # NaN: no refusals


def _over(ratios: dict[tuple[str, str, int], float], m: str, k: str) -> str:
    """32 clients' share of their ceiling over 8 clients' share of theirs."""
    a, b = ratios.get((m, k, 32)), ratios.get((m, k, 8))
    return f"{a / b:.2f}" if a is not None and b else "-"


def targets(
    results: dict[tuple[str, str, int], Cell],
    ratios: dict[tuple[str, str, int], float],
    wrk_results: dict[tuple[str, str, int], WrkCell],
    wrk_ratios: dict[tuple[str, str, int], float],
) -> None:
    """The issue's server targets, computed from the cells above (8 and 32 clients), for each
    client; the accepted p99 needs per-request statuses, which only hey reports.

    32/8 is given twice: as measured (req/s over req/s) and over each cell's own ceiling (the
    cells' "x ceiling" figures divided), which takes out how fast the machine itself ran during
    each cell: the ceiling is measured right before and after every cell and moves by up to ~7%
    between adjacent cells here."""
    print("(b') against the targets: 8 clients x ceiling (imagenet >= 0.85, products >= 0.60);")
    print("     32 vs 8 clients: throughput (>= 1.0; as measured, and over each cell's ceiling)")
    print("     and accepted p99 (< 4.0)")
    print(
        "| model | image | 8 clients x ceiling, hey | 8 clients x ceiling, wrk "
        "| 32/8 req/s, hey | 32/8 req/s, wrk | 32/8 x ceiling, hey | 32/8 x ceiling, wrk "
        "| 32/8 accepted p99, hey |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (m, k, c), cell in results.items():
        if c != 8:
            continue
        big, w8, w32 = (
            results.get((m, k, 32)),
            wrk_results.get((m, k, 8)),
            wrk_results.get((m, k, 32)),
        )
        tput = f"{big.rps / cell.rps:.2f}" if big and cell.rps else "-"
        wtput = f"{w32.rps / w8.rps:.2f}" if w8 and w32 and w8.rps else "-"
        p99 = f"{big.p99 / cell.p99:.2f}" if big and cell.p99 == cell.p99 else "-"
        print(
            f"| {m} | {k} | {ratios[(m, k, c)]:.2f} | {wrk_ratios.get((m, k, c), float('nan')):.2f} "
            f"| {tput} | {wtput} | {_over(ratios, m, k)} | {_over(wrk_ratios, m, k)} | {p99} |"
        )
    print()


# -- (b)/(c) HTTP -----------------------------------------------------------------------------


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def server_env(args: argparse.Namespace, work: Path, port: int) -> dict[str, str]:
    env = dict(
        os.environ,
        IMGCLASS_MODELS_DIR=str(args.models_dir),
        IMGCLASS_DATA_DIR=str(work / "service"),
        IMGCLASS_PORT=str(port),
        IMGCLASS_ENABLED_MODELS="[" + ",".join(f'"{m}"' for m in args.models) + "]",
    )
    env.update(kv.split("=", 1) for kv in args.env)
    return env


def sweep(
    args: argparse.Namespace, imgs: dict[str, bytes]
) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(a) every ceiling configuration once; the best per model and image is re-measured next to
    each server cell (other processes share these cores, so adjacent runs are compared)."""
    print("(a) in-process ceiling sweep: img/s of app.imaging.prepare + OnnxModel.run, no HTTP")
    print("| model | image | pipelines x ort threads x batch | img/s |")
    print("|---|---|---|---:|")
    best: dict[tuple[str, str], tuple[int, int, int]] = {}
    for m in args.models:
        for k, data in imgs.items():
            rates = {}
            for cfg in ceiling_configs():
                rates[cfg] = in_process(args.models_dir / m, data, *cfg, args.ceiling_seconds)
                print(f"| {m} | {k} | {' x '.join(map(str, cfg))} | {rates[cfg]:.0f} |", flush=True)
            best[(m, k)] = max(rates, key=lambda c: rates[c])
    print()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["imagenet", "products"])
    ap.add_argument("--images", nargs="+", default=["640", "12mp"], choices=["640", "12mp"])
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])  # 64 on request
    ap.add_argument("--seconds", type=float, default=8.0, help="per client per server cell")
    ap.add_argument("--ceiling-seconds", type=float, default=3.0, help="per ceiling run")
    ap.add_argument("--peer-clients", nargs="+", type=int, default=[8])
    ap.add_argument("--skip", nargs="*", default=[], choices=["server", "peer"])
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--env", nargs="*", default=[], help="extra IMGCLASS_*=value for the server")
    args = ap.parse_args()
    for tool in ("hey", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found; run scripts/setup-system (Debian package '{tool}')")
    imgs = {k: v for k, v in images().items() if k in args.images}
    work = Path(tempfile.mkdtemp(prefix="imgclass-load-"))
    bodies = {k: work / f"{k}.body" for k in imgs}
    for k, path in bodies.items():
        path.write_bytes(multipart(imgs[k]))
    sizes = ", ".join(f"{k} = {len(v):,} B" for k, v in imgs.items())
    print(
        f"imgclass load bench: {cpu_count()} cores, onnxruntime {choose_providers('auto')}, "
        f"hey and wrk {args.seconds:g}s each per cell, ceiling runs {args.ceiling_seconds:g}s"
    )
    print(f"images from {PHOTO.relative_to(ROOT)}: {sizes}\n")
    best = sweep(args, imgs)

    results: dict[tuple[str, str, int], Cell] = {}
    ratios: dict[tuple[str, str, int], float] = {}
    wrk_results: dict[tuple[str, str, int], WrkCell] = {}
    wrk_ratios: dict[tuple[str, str, int], float] = {}
    if "server" not in args.skip:
        port = free_port()
        proc = start([sys.executable, "-m", "app"], server_env(args, work, port), work / "srv.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base + "/readyz", proc, 180)
            print(
                "(b) server (python -m app, default settings) over HTTP: hey, then wrk, multipart, one image"
            )
            for m in args.models:
                pol = httpx.get(f"{base}/v1/models/{m}").json().get("serving")
                if pol:
                    print(
                        f"  {m}: {pol.get('workers', 1)} processes x {pol['pipelines']} "
                        f"pipelines x {pol['intra_op_threads']} ort threads, queue bound "
                        f"{pol['queue_max_wait_ms']:g} ms of work / {pol['queue_limit']} "
                        f"requests per process, max batch {pol['max_batch']}, wait {pol['max_wait_ms']:g} ms "
                        f"({pol['reason']})"
                    )
            print(
                "| model | image | clients | hey req/s | p50 ms | p99 ms | 503s | 503 p50/p99 ms "
                "| other | extra dials | probe p99 ms | wrk req/s | wrk non-2xx | wrk socket errors "
                "| ceiling img/s (config) | x ceiling, hey | x ceiling, wrk |"
            )
            print(
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
            )
            for m in args.models:
                for k in imgs:
                    cfg = best[(m, k)]
                    for c in args.clients:
                        # The ceiling right before and right after the cell, averaged: other
                        # processes on these cores come and go.
                        before = in_process(
                            args.models_dir / m, imgs[k], *cfg, args.ceiling_seconds
                        )
                        url = f"{base}/v1/models/{m}/predict"
                        with ProbeWatch(base + "/readyz") as probes:
                            cell = hey(url, bodies[k], c, args.seconds)
                        cell.probe_p99 = probes.p99()
                        wcell = wrk(url, bodies[k], c, args.seconds)
                        after = in_process(args.models_dir / m, imgs[k], *cfg, args.ceiling_seconds)
                        ceil = (before + after) / 2
                        results[(m, k, c)], wrk_results[(m, k, c)] = cell, wcell
                        ratios[(m, k, c)] = cell.rps / ceil
                        wrk_ratios[(m, k, c)] = wcell.rps / ceil
                        print(
                            f"| {m} | {k} | {c} | {cell.rps:.0f} | {cell.p50:.1f} | {cell.p99:.1f} "
                            f"| {cell.s503} | {_pair(cell.p50_503, cell.p99_503)} "
                            f"| {cell.other} | {cell.dials} | {cell.probe_p99:.1f} "
                            f"| {wcell.rps:.0f} | {wcell.non2xx} | {wcell.socket_errors} "
                            f"| {ceil:.0f} ({' x '.join(map(str, cfg))}) | {cell.rps / ceil:.2f} "
                            f"| {wcell.rps / ceil:.2f} |",
                            flush=True,
                        )
        finally:
            stop(proc)
        print()
        targets(results, ratios, wrk_results, wrk_ratios)

    if "peer" not in args.skip and "imagenet" in args.models:
        port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", "bench.keras_peer:app", "--port", str(port)]
        proc = start([*cmd, "--log-level", "warning"], dict(os.environ), work / "peer.log")
        try:
            wait_ready(f"http://127.0.0.1:{port}/docs", proc, 300)
            print(
                "(c) tutorial peer: FastAPI + Keras predict, same EfficientNet-Lite0 weights, imagenet"
            )
            print("| image | clients | peer req/s | peer p50 ms | peer p99 ms | imgclass / peer |")
            print("|---|---:|---:|---:|---:|---:|")
            for k in imgs:
                for c in args.peer_clients:
                    cell = hey(f"http://127.0.0.1:{port}/predict", bodies[k], c, args.seconds)
                    ours = results.get(("imagenet", k, c))
                    ratio = ours.rps / cell.rps if ours and cell.rps else float("nan")
                    print(
                        f"| {k} | {c} | {cell.rps:.1f} | {cell.p50:.0f} | {cell.p99:.0f} "
                        f"| {ratio:.1f} |",
                        flush=True,
                    )
        finally:
            stop(proc)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
