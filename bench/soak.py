"""Soak: does one server process hold steady under sustained mixed load for N minutes?

Starts one real server (`python -m app`, IMGCLASS_WORKERS=1) on a loopback port with a fresh
temporary IMGCLASS_DATA_DIR and the shipped models/, waits for /readyz, then drives a mixed
workload from a few client threads (each reconnects every 50 operations) for --minutes:
  * predict with real images on every served model: multipart, raw body, JSON base64, and
    multipart batches of 4;
  * Open Inference Protocol v2 infer: BYTES as base64 JSON and with the binary-data extension;
  * catalog cycles: create, add labelled items (multipart and raw), search by image and by
    item id, get, delete;
  * bad requests that must get a 4xx: a truncated JPEG, text sent as text/plain, a PDF in a
    multipart part, a gzip-encoded body, a body over IMGCLASS_MAX_IMAGE_BYTES (set to 2 MB
    here so that case is cheap), a PNG header claiming 100,000 x 100,000 pixels, 33 images in
    one batch, broken JSON on /v1 and /v2, top_k=0, an unknown model, an unknown catalog;
  * probes (/readyz, /v1/models);
and from two more threads: a small teach job every --teach-every seconds (a products catalog
of 2 Fashion-MNIST classes x 4 images, POST .../train, poll the job, predict and infer with
the taught model, delete it, predict again for the 404, delete the catalog; every job teaches
a new model name, as users do), and a /metrics scrape every 15 s (its body size is reported).

Every second it samples the server process's RSS (/proc/PID/status VmRSS), open file
descriptors (/proc/PID/fd) and threads. After the warm-up (the first --warmup share of the
run) it fits a least-squares slope to each and prints, for RSS, fds and threads: at the start,
after the warm-up, peak, at the end, the medians of the second and last fifths, the slope per
minute with its standard error and the residual scatter; the threads gained per taught model;
the same 2 s after the load stopped; /metrics' size; requests by operation and status class;
predict p50/p99 per model in the first and last fifth of the run and their ratio; how the
server stopped (SIGTERM, exit code, seconds) and ERROR/Traceback lines in its log. Any 5xx,
transport error, bad request answered 2xx or good request answered 4xx is listed under
FAILURES. It exits 0 either way (`--strict`: 1 when there are failures).

Samples are autocorrelated (memory moves in steps, not independently each second), so the
slope's standard error understates its uncertainty: read the slope against the residual
scatter and against the drift between the second and last fifths.

Usage: .venv/bin/python -m bench.soak [--minutes 10] [--clients 3] [--teach-every 45]
         [--models bird digits imagenet products santa] [--app-root DIR] [--port N]
         [--samples-csv FILE] [--strict]
`--app-root` runs the server from another checkout (e.g. a clean `git worktree` of HEAD).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import free_port, wait_ready
from bench.soak_report import report_latency, report_requests, report_resources
from bench.soak_stats import Sample, read_proc, sample_loop
from bench.soak_workload import (
    MAX_IMAGE_BYTES,
    Recorder,
    Workload,
    metrics_loop,
    model_images,
    teach_loop,
    unexpected,
)

ROOT = Path(__file__).resolve().parent.parent


# -- the server -------------------------------------------------------------------------------


def server_env(
    app_root: Path, models_dir: Path, models: list[str], data: Path, port: int
) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(app_root),
        "IMGCLASS_MODELS_DIR": str(models_dir),
        "IMGCLASS_DATA_DIR": str(data),
        "IMGCLASS_HOST": "127.0.0.1",
        "IMGCLASS_PORT": str(port),
        "IMGCLASS_WORKERS": "1",
        "IMGCLASS_LOG_LEVEL": "WARNING",
        "IMGCLASS_ACCESS_LOG": "false",
        "IMGCLASS_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "IMGCLASS_ENABLED_MODELS": json.dumps(models),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: plain in-memory metrics
    return env


@contextmanager
def server(
    args: argparse.Namespace, work: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, dict[str, float]]]:
    """`python -m app` started and ready; at the end SIGTERM, and how it stopped in the dict."""
    port = args.port or free_port()
    env = server_env(args.app_root, args.models_dir, args.models, work / "data", port)
    with (work / "server.log").open("wb") as fh:
        cmd = [sys.executable, "-m", "app"]
        proc = subprocess.Popen(
            cmd, cwd=args.app_root, env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    stopped: dict[str, float] = {}
    try:
        wait_ready(base + "/readyz", proc, 180)
        yield proc, base, stopped
    finally:
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            stopped["code"] = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stopped["code"], stopped["killed"] = proc.wait(5), 1
        stopped["seconds"] = time.monotonic() - t


def log_problems(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [ln for ln in lines if "ERROR" in ln or ln.startswith("Traceback")]


@dataclass
class Run:
    """What one soak collected."""

    args: argparse.Namespace
    rec: Recorder
    ready: tuple[float, int, int]
    samples: list[Sample] = field(default_factory=list)
    metric_sizes: list[tuple[float, int]] = field(default_factory=list)
    taught: list[float] = field(default_factory=list)  # when each teach cycle ended
    rest: tuple[float, int, int] | None = None
    died: int | None = None
    stopped: dict[str, float] = field(default_factory=dict)
    minutes: float = 0.0


def soak(args: argparse.Namespace, work: Path) -> Run:
    images = model_images(args.models)
    with server(args, work) as (proc, base, stopped):
        run = Run(args, Recorder(t0=time.monotonic()), read_proc(proc.pid), stopped=stopped)
        stop, wl = threading.Event(), Workload(base, run.rec, images)
        threads = [
            threading.Thread(
                target=sample_loop, args=(proc.pid, run.rec.t0, run.samples, stop, 1.0)
            ),
            threading.Thread(
                target=teach_loop, args=(base, run.rec, args.teach_every, stop, run.taught)
            ),
            threading.Thread(target=metrics_loop, args=(base, run.rec, run.metric_sizes, stop)),
            *(
                threading.Thread(target=wl.client_loop, args=(i, args.seed, stop))
                for i in range(args.clients)
            ),
        ]
        for th in threads:
            th.start()
        try:
            while time.monotonic() - run.rec.t0 < args.minutes * 60 and proc.poll() is None:
                time.sleep(0.5)
        finally:
            stop.set()
            for th in threads:
                th.join(90)
        run.minutes = (time.monotonic() - run.rec.t0) / 60
        run.died = proc.poll()
        if run.died is None:
            time.sleep(2.0)  # the clients are gone: what stays at rest
            run.rest = read_proc(proc.pid)
    return run


def report(run: Run, log: Path) -> list[str]:
    """Print the tables; return the failures."""
    args, rec, samples = run.args, run.rec, run.samples
    total_s, warm_s = args.minutes * 60, args.minutes * 60 * args.warmup
    problems = log_problems(log)
    print(
        f"imgclass soak: {run.minutes:.1f} min of load from {args.clients} client threads, a teach "
        f"job every {args.teach_every:g} s ({len(run.taught)} done) and /metrics every 15 s; models "
        f"{', '.join(args.models)}; one server process (python -m app, IMGCLASS_WORKERS=1) from "
        f"{args.app_root}; {os.cpu_count()} cores here, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"ready: RSS {run.ready[0]:.1f} MB, {run.ready[1]} fds, {run.ready[2]} threads; warm-up: the "
        f"first {warm_s / 60:.1f} min ({args.warmup:.0%}), left out of the slopes; {len(samples)} "
        "samples, one a second\n"
    )
    if len(samples) >= 3:
        taught = sum(t >= warm_s for t in run.taught)
        report_resources(samples, warm_s, total_s, taught)
    if run.rest:
        print(
            f"2 s after the load: RSS {run.rest[0]:.1f} MB, {run.rest[1]} fds, {run.rest[2]} threads"
        )
    if run.metric_sizes:
        print(
            f"/metrics body: {run.metric_sizes[0][1]:,} B at the first scrape, "
            f"{run.metric_sizes[-1][1]:,} B at the last ({len(run.metric_sizes)} scrapes)"
        )
    print()
    report_requests(rec.calls, run.minutes)
    print()
    report_latency(rec.calls, total_s)
    code, killed = run.stopped.get("code"), run.stopped.get("killed")
    # uvicorn re-raises the SIGTERM it caught once it has shut down: -15 is a clean exit too.
    clean = code in (0, -signal.SIGTERM) and not killed
    print(
        f"\nshutdown: SIGTERM -> exit code {code} in {run.stopped.get('seconds', 0):.1f} s "
        f"({'clean' if clean else 'NOT clean'}); server log: {len(problems)} ERROR/Traceback lines"
    )
    failures = [
        f"{c.op} -> {c.status or 'no answer'} at {c.t:.0f} s" for c in rec.calls if unexpected(c)
    ]
    failures += rec.errors + [f"server log: {ln}" for ln in problems[:20]]
    if run.died is not None:
        failures.append(f"the server exited with {run.died} during the load")
    if not clean:
        failures.append(f"unclean shutdown: {run.stopped}")
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    ap.add_argument("--clients", type=int, default=3, help="client threads (mixed operations)")
    ap.add_argument("--teach-every", type=float, default=45.0, help="seconds between teach jobs")
    ap.add_argument(
        "--warmup", type=float, default=0.2, help="share of the run left out of the fits"
    )
    ap.add_argument(
        "--models", nargs="+", default=["bird", "digits", "imagenet", "products", "santa"]
    )
    ap.add_argument("--app-root", type=Path, default=ROOT, help="checkout the server runs from")
    ap.add_argument("--models-dir", type=Path, default=None, help="default: APP_ROOT/models")
    ap.add_argument("--port", type=int, default=0, help="default: a free loopback port")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples-csv", type=Path, default=None, help="write t_s,rss_mb,fds,threads")
    ap.add_argument("--strict", action="store_true", help="exit 1 when anything failed")
    args = ap.parse_args(argv)
    if "products" not in args.models:
        ap.error("the catalog and teach cycles use the products backbone: keep it in --models")
    args.app_root = args.app_root.resolve()
    args.models_dir = (args.models_dir or args.app_root / "models").resolve()
    work = Path(tempfile.mkdtemp(prefix="imgclass-soak-"))
    try:
        run = soak(args, work)
    except BaseException:
        print(f"(server log kept: {work / 'server.log'})", file=sys.stderr)
        raise
    failures = report(run, work / "server.log")
    if args.samples_csv:
        rows = "".join(f"{s.t:.1f},{s.rss_mb:.2f},{s.fds},{s.threads}\n" for s in run.samples)
        args.samples_csv.write_text("t_s,rss_mb,fds,threads\n" + rows)
    if not failures:
        print("\nno 5xx, no transport errors, every bad request got a 4xx and every good one a 2xx")
        shutil.rmtree(work, ignore_errors=True)
        return 0
    print(f"\nFAILURES ({len(failures)}): 5xx, no answer, wrong class of answer, log errors")
    for line in failures[:60]:
        print(f"  {line}")
    print(f"  (server log kept: {work / 'server.log'})")
    return 1 if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
