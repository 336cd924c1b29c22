"""Peak server memory and the slowest answers over the hostile-input corpus (issue #11).

Starts a real server (`python -m app`, uvicorn) on a free loopback port with the shipped
bundles, sends every case of tests/app/hostile/cases.py (crafted EXIF, CPU and memory bombs,
damaged files, polyglots, non-images, odd-but-valid images) plus a batch of large images,
samples the server's RSS every 10 ms (psutil) and prints: peak RSS, RSS after start-up,
counts by status class, answers of the wrong class, and the slowest cases with their times.

The data folder holds the shipped `products` catalog, built first as `scripts/serve` builds it
(round 36: an independent run found the tree 50-80 MiB above this bench's figures, which were
measured without it); `--no-catalog` starts on an empty one.

Usage:
  .venv/bin/python -m bench.peak_memory [--app-root DIR] [--repeat 1] [--concurrency 1]
                                        [--no-catalog]
`--app-root` runs the server from another checkout (e.g. a `git worktree` of an older
commit) to measure "before"; the corpus always comes from this checkout.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import free_port, stop  # noqa: E402
from tests.app.hostile.cases import CASES, Case, Payload, photo  # noqa: E402
from tests.images import encode  # noqa: E402


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.window = 0  # peak since the last `reset_window` (per case, one at a time)
        self.stop = threading.Event()
        self.inflight: set[str] = set()  # the cases being answered (callers add and remove)
        self.at_peak: tuple[list[str], list[int]] = ([], [])  # in flight, RSS of each process

    def reset_window(self) -> None:
        self.window = 0

    def each(self) -> list[int]:
        """RSS of the process and of each of its children."""
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
            return [p.memory_info().rss for p in procs]
        except psutil.Error:
            return []

    def current(self) -> int:
        return sum(self.each())

    def run(self) -> None:
        while not self.stop.is_set():
            parts = self.each()
            now = sum(parts)
            if now > self.peak:
                self.at_peak = (sorted(self.inflight), parts)
            self.peak = max(self.peak, now)
            self.window = max(self.window, now)
            time.sleep(self.every)


def post(client: httpx.Client, url: str, payload: Payload) -> httpx.Response:
    if isinstance(payload, bytes):
        return client.post(
            url, content=payload, headers={"content-type": "application/octet-stream"}
        )
    files = [
        ("file", (f"img{i}", data, "application/octet-stream")) for i, data in enumerate(payload)
    ]
    return client.post(url, files=files)


def status_ok(case: Case, status: int) -> bool:
    """Right class of answer (the top-1 check lives in the tests; here only the class)."""
    if case.expect in ("photo", "ok"):
        return 200 <= status < 300
    if case.expect == "reject":
        return status in case.statuses
    return 200 <= status < 300 or status in case.statuses


def large_batch() -> Case:
    big = encode(photo().resize((4000, 3000)), "JPEG", quality=85)
    return Case("batch-8x12mp-jpeg", lambda: [big] * 8, "ok", group="batch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--app-root", type=Path, default=ROOT)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--repeat", type=int, default=1, help="send the corpus this many times")
    ap.add_argument("--slowest", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    ap.add_argument("--timeout", type=float, default=120.0, help="client timeout per request (s)")
    ap.add_argument(
        "--no-catalog",
        action="store_true",
        help="start on an empty data folder; by default the shipped `products` catalog is built\n"
        "in it first, as scripts/serve does (each worker then holds its index: +25 MiB each)",
    )
    args = ap.parse_args()

    cases = [*CASES, large_batch()]
    payloads = {c.name: c.make() for c in cases}  # generated before the server starts
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="peakmem-")
    env = {
        **os.environ,
        "PYTHONPATH": str(args.app_root),
        "IMGCLASS_MODELS_DIR": str(args.models_dir),
        "IMGCLASS_DATA_DIR": tmp,
        "IMGCLASS_HOST": "127.0.0.1",
        "IMGCLASS_PORT": str(port),
        "IMGCLASS_LOG_LEVEL": "WARNING",
        "IMGCLASS_ACCESS_LOG": "false",
    }
    if not args.no_catalog:  # the server users start (scripts/serve) holds this catalog
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build-products-catalog")],
            cwd=args.app_root,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    log = Path(tmp) / "server.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=args.app_root,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # No keep-alive: a server that resets a connection after a 500 must not cost the next case.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=args.timeout, limits=limits) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    ready = client.get(base + "/readyz")
                    if ready.status_code == 200:
                        served = ready.json().get("models", [])
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"server did not become ready; log: {log}")
                time.sleep(0.2)
            sampler = RssSampler(proc.pid)
            rss_ready = sampler.current()
            sampler.start()
            times: list[tuple[float, str, int]] = []
            peaks: list[tuple[int, str]] = []  # (peak RSS during the case, case), 1 at a time
            classes: collections.Counter[str] = collections.Counter()
            wrong: list[str] = []

            case_peaks: dict[str, int] = {}

            def one(case: Case) -> tuple[float, str, int]:
                sampler.reset_window()
                sampler.inflight.add(case.name)
                t0 = time.perf_counter()
                try:
                    url = f"{base}/v1/models/{case.model}/predict"
                    status = post(client, url, payloads[case.name]).status_code
                except httpx.TransportError:  # timeout, reset: no answer at all
                    status = 0
                case_peaks[case.name] = max(sampler.window, sampler.current())
                sampler.inflight.discard(case.name)
                return time.perf_counter() - t0, case.name, status

            by_name = {c.name: c for c in cases}
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                for dt, name, status in pool.map(one, cases * args.repeat):
                    times.append((dt, name, status))
                    if args.concurrency == 1:
                        peaks.append((case_peaks[name], name))
                    classes[f"{status // 100}xx" if status else "no answer"] += 1
                    if not status_ok(by_name[name], status):
                        wrong.append(f"{name} -> {status}")
                    if proc.poll() is not None:
                        sys.exit(f"the server died during {name}; log: {log}")
            time.sleep(2.0)  # what the tree keeps once idle
            rss_end = sampler.current()
            sampler.stop.set()
            sampler.join()
    finally:
        stop(proc)

    n = len(times)
    print(
        f"app root: {args.app_root}   cases: {len(cases)} x {args.repeat} = {n} requests, "
        f"{args.concurrency} at a time"
    )
    print(f"bundles loaded at start-up: {', '.join(served)}")
    print(f"RSS after start-up:      {rss_ready / 2**20:8.1f} MiB")
    print(f"peak RSS over the run:   {sampler.peak / 2**20:8.1f} MiB")
    print(f"RSS 2 s after the run:   {rss_end / 2**20:8.1f} MiB")
    names, parts = sampler.at_peak
    print("  at the peak, each process (MiB): " + ", ".join(f"{p / 2**20:.0f}" for p in parts))
    print("  at the peak, in flight: " + (", ".join(names) or "nothing"))
    print("answers by status class: " + ", ".join(f"{k}: {v}" for k, v in sorted(classes.items())))
    print(f"answers of the wrong class: {len(wrong)}" + "".join(f"\n  {w}" for w in wrong))
    print(
        f"total time: {sum(t for t, _, _ in times):.1f} s; over 3 s: {sum(t > 3 for t, _, _ in times)}"
    )
    if peaks:
        print(f"\n{'cases with the highest peak RSS':40s} {'MiB':>8s}")
        for rss, name in sorted(peaks, reverse=True)[:5]:
            print(f"{name:40s} {rss / 2**20:8.1f}")
    print(f"\n{'slowest cases':40s} {'seconds':>8s} {'status':>7s}")
    for dt, name, status in sorted(times, reverse=True)[: args.slowest]:
        print(f"{name:40s} {dt:8.2f} {status:7d}")


if __name__ == "__main__":
    main()
