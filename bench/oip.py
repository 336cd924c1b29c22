"""The three ways in, compared in one run: /v1 predict (multipart, httpx), the Open Inference
Protocol over HTTP (/v2, tritonclient.http, binary data) and over gRPC (tritonclient.grpc).

One `python -m app` (its defaults, IMGCLASS_GRPC_PORT set) serves one model; each cell runs C
client threads, each sending one encoded photo per request for S seconds, and counts the
answers that came back right (the top-1 is checked against /v1's). The three protocols are run
in interleaved rounds (v1, v2, grpc, v1, ...) so that drift in what else the machine is doing
falls on all three alike; the table gives req/s summed over the rounds, p50/p99 latency, and
req/s as a ratio of /v1's. The client threads share the cores with the server: compare the
ratios within one run.

Usage: .venv/bin/python -m bench.oip [--model imagenet] [--clients 1 8] [--seconds 5]
         [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.procs import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "data" / "photos" / "imgaug" / "quokka.jpg"  # a real 960x643 photo
Send = Callable[[], int]  # one request; returns the top-1 index


def photo_640() -> bytes:
    with Image.open(PHOTO) as im:
        img = im.convert("RGB").resize((640, 480), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def v1_sender(base: str, model: str, jpeg: bytes) -> Send:
    client = httpx.Client(base_url=base, timeout=60)

    def send() -> int:
        files = {"file": ("q.jpg", jpeg, "image/jpeg")}
        r = client.post(f"/v1/models/{model}/predict?top_k=1", files=files)
        r.raise_for_status()
        return int(r.json()["results"][0]["predictions"][0]["index"])

    return send


def v2_sender(port: int, model: str, jpeg: bytes) -> Send:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}", network_timeout=60)
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg], dtype=np.object_), binary_data=True)
    out = [httpclient.InferRequestedOutput("probs", binary_data=True)]

    def send() -> int:
        return int(np.argmax(client.infer(model, [inp], outputs=out).as_numpy("probs")[0]))

    return send


def grpc_sender(port: int, model: str, jpeg: bytes) -> Send:
    import tritonclient.grpc as grpcclient

    # Channels of one process share a connection unless told not to (gRPC's global subchannel
    # pool), and one connection is served by one worker: each client here is its own.
    args = [("grpc.use_local_subchannel_pool", 1)]
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}", channel_args=args)
    inp = grpcclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg], dtype=np.object_))
    out = [grpcclient.InferRequestedOutput("probs")]

    def send() -> int:
        return int(np.argmax(client.infer(model, [inp], outputs=out).as_numpy("probs")[0]))

    return send


def cell(make: Callable[[], Send], clients: int, seconds: float, top1: int) -> list[float]:
    """Latencies (s) of the right answers of `clients` threads sending for `seconds`."""
    senders = [make() for _ in range(clients)]  # one connection or channel per client
    lat: list[list[float]] = [[] for _ in senders]
    wrong = [0]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                ok = senders[i]() == top1
            except Exception:  # an error is a wrong answer here
                ok = False
            if ok:
                lat[i].append(time.perf_counter() - t0)
            else:
                wrong[0] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    for t in threads:
        t.join()
    if wrong[0]:
        print(f"  ({wrong[0]} answers wrong or failed)")
    return [x for xs in lat for x in xs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="imagenet")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    jpeg = photo_640()
    port, grpc_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as work:
        env = dict(
            os.environ,
            IMGCLASS_DATA_DIR=str(Path(work) / "service"),
            IMGCLASS_PORT=str(port),
            IMGCLASS_GRPC_PORT=str(grpc_port),
            IMGCLASS_ENABLED_MODELS=f'["{args.model}"]',
            IMGCLASS_LOG_LEVEL="WARNING",
            IMGCLASS_SKIP_CATALOG="1",
        )
        log = Path(work) / "server.log"
        with log.open("wb") as fh:
            cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "app"]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz", proc, 180)
            top1 = v1_sender(base, args.model, jpeg)()
            makers: dict[str, Callable[[], Send]] = {
                "/v1 multipart (httpx)": lambda: v1_sender(base, args.model, jpeg),
                "/v2 HTTP binary (tritonclient.http)": lambda: v2_sender(port, args.model, jpeg),
                "gRPC (tritonclient.grpc)": lambda: grpc_sender(grpc_port, args.model, jpeg),
            }
            for make in makers.values():  # warm each path
                cell(make, 1, 0.5, top1)
            print(f"{args.model}, one 640x480 JPEG per request, {args.rounds} interleaved rounds "
                  f"of {args.seconds:g} s per protocol and client count; `python -m app` defaults")  # fmt: skip
            print("| clients | protocol | req/s | p50 ms | p99 ms | x /v1 |")
            print("|---:|---|---:|---:|---:|---:|")
            for c in args.clients:
                lat: dict[str, list[float]] = {k: [] for k in makers}
                for _ in range(args.rounds):
                    for name, make in makers.items():
                        lat[name] += cell(make, c, args.seconds, top1)
                total = args.rounds * args.seconds
                v1 = len(lat[next(iter(makers))]) / total
                for name, xs in lat.items():
                    rate = len(xs) / total
                    qs = statistics.quantiles(xs, n=100) if len(xs) > 1 else [0.0] * 99
                    print(f"| {c} | {name} | {rate:.0f} | {1e3 * qs[49]:.1f} | "
                          f"{1e3 * qs[98]:.1f} | {rate / v1:.2f} |", flush=True)  # fmt: skip
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
