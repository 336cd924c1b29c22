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
import base64
import collections
import gzip
import json
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.clients import p99
from bench.procs import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "data" / "photos"
EMOJI = ROOT / "data" / "emoji" / "emoji-datasource-google" / "img" / "google" / "64"
MAX_IMAGE_BYTES = 2_000_000  # the server's IMGCLASS_MAX_IMAGE_BYTES here: oversize is cheap
TEACH_LABELS = {"1": "trouser", "4": "coat"}  # 4 images each among foolbox's 20 Fashion-MNIST


# -- images -----------------------------------------------------------------------------------


def _read(paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in sorted(paths)]


def model_images(models: list[str]) -> dict[str, list[bytes]]:
    """Real pictures each served model is meant for (photos for any other model)."""
    fb = PHOTOS / "foolbox"
    photos = _read(
        [
            *fb.glob("imagenet_*.jpg"),
            *(PHOTOS / "sklearn").glob("*.jpg"),
            *(PHOTOS / "skimage").glob("*.png"),
            PHOTOS / "imgaug" / "quokka.jpg",
        ]
    )
    emoji = _read(sorted([*EMOJI.glob("1f385*.png"), *EMOJI.glob("1f98*.png")])[:24])
    known = {
        "products": _read([*fb.glob("fashionMNIST_*.png")]),
        "digits": _read([*fb.glob("mnist_*.png")]),
        "bird": _read([*fb.glob("cifar10_*.png")]) + photos[:10],
        "santa": emoji or photos,
        "imagenet": photos,
    }
    out = {m: known.get(m) or photos for m in models}
    if not all(out.values()):
        sys.exit(f"images missing under {PHOTOS}; run scripts/fetch-data")
    return out


def teach_images() -> dict[str, list[bytes]]:
    fb = PHOTOS / "foolbox"
    return {
        name: _read([*fb.glob(f"fashionMNIST_*_{cls}.png")]) for cls, name in TEACH_LABELS.items()
    }


def bomb_png() -> bytes:
    """A PNG whose header claims 100,000 x 100,000 pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# -- recording --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    t: float  # seconds since the load started
    op: str
    expect: str  # "2xx" or "4xx"
    status: int  # 0: no answer (transport error)
    ms: float
    model: str = ""


@dataclass
class Recorder:
    t0: float
    calls: list[Call] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(
        self, op: str, fn: Callable[[], httpx.Response], expect: str = "2xx", model: str = ""
    ) -> httpx.Response | None:
        start = time.monotonic()
        try:
            resp: httpx.Response | None = fn()
        except httpx.TransportError as exc:
            resp = None
            with self.lock:
                self.errors.append(f"{op}: {type(exc).__name__}: {exc}")
        status = resp.status_code if resp is not None else 0
        call = Call(start - self.t0, op, expect, status, (time.monotonic() - start) * 1e3, model)
        with self.lock:
            self.calls.append(call)
        return resp


def unexpected(c: Call) -> bool:
    return c.status == 0 or c.status >= 500 or f"{c.status // 100}xx" != c.expect


# -- the workload -----------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
TOP3 = [{"name": "probs", "parameters": {"classification": 3}}]


def infer_json(data: bytes) -> dict[str, object]:
    """An OIP v2 infer body: one encoded image as a base64 BYTES element, top-3 strings."""
    b64 = base64.b64encode(data).decode()
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]}


def infer_binary(data: bytes) -> tuple[bytes, dict[str, str]]:
    """The same with the binary-data extension: JSON header, then the 4-byte length + bytes."""
    spec = {"name": "image", "shape": [1], "datatype": "BYTES"}
    spec["parameters"] = {"binary_data_size": 4 + len(data)}  # type: ignore[assignment]
    head = json.dumps({"inputs": [spec], "outputs": TOP3}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))}
    return head + struct.pack("<I", len(data)) + data, headers


class Workload:
    """The operations a client thread draws from, by weight (out of 100)."""

    def __init__(self, base: str, rec: Recorder, images: dict[str, list[bytes]]) -> None:
        self.base, self.rec, self.images = base, rec, images
        self.models = sorted(images)
        jpeg = (PHOTOS / "foolbox" / "imagenet_00_243.jpg").read_bytes()  # a real photo
        any_image = images[self.models[0]][0]
        predict = "/v1/models/{m}/predict"
        # (operation, path, httpx.post keywords): each must be answered with a 4xx.
        self.bad_cases: list[tuple[str, str, dict[str, object]]] = [
            ("truncated jpeg", predict, {"content": jpeg[: len(jpeg) // 2]}),
            ("text/plain text", predict, {"content": b"hello", "headers": {"Content-Type": "text/plain"}}),
            ("pdf in multipart", predict, {"files": {"file": ("a.pdf", b"%PDF-1.4\n1 0 obj")}}),
            ("gzip body", predict, {"content": gzip.compress(jpeg), "headers": {"Content-Encoding": "gzip"}}),
            ("body over max_image_bytes", predict, {"content": b"\xff\xd8\xff" + bytes(MAX_IMAGE_BYTES)}),
            ("pixel-bomb png", predict, {"content": bomb_png()}),
            ("33-image batch", predict, {"files": [("file", (str(i), any_image)) for i in range(33)]}),
            ("broken json", predict, {"content": b'{"images": [', "headers": JSON}),
            ("v2 broken json", "/v2/models/{m}/infer", {"content": b'{"inputs": [{"name"', "headers": JSON}),
            ("top_k=0", predict + "?top_k=0", {"content": jpeg}),
            ("unknown model", "/v1/models/no-such-model/predict", {"content": jpeg}),
            ("unknown catalog", "/v1/catalogs/no-such/search", {"files": {"file": ("q", jpeg)}}),
        ]  # fmt: skip
        self.ops: list[tuple[int, Callable[[httpx.Client, random.Random], None]]] = [
            (33, self.predict_multipart),
            (10, self.predict_raw),
            (8, self.predict_json),
            (8, self.predict_batch),
            (6, self.infer_json),
            (4, self.infer_binary),
            (3, self.catalog_cycle),
            (20, self.bad),
            (8, self.probe),
        ]
        self.n = 0
        self.n_lock = threading.Lock()

    def post(
        self, c: httpx.Client, op: str, path: str, model: str = "", **kw: object
    ) -> httpx.Response | None:
        return self.rec.call(op, lambda: c.post(path, **kw), "2xx", model)  # type: ignore[arg-type]

    def pick(self, rng: random.Random) -> tuple[str, bytes]:
        m = rng.choice(self.models)
        return m, rng.choice(self.images[m])

    def predict_multipart(self, c: httpx.Client, rng: random.Random) -> None:
        m, data = self.pick(rng)
        self.post(c, "predict", f"/v1/models/{m}/predict?top_k=3", m, files={"file": ("x", data)})

    def predict_raw(self, c: httpx.Client, rng: random.Random) -> None:
        m, data = self.pick(rng)
        self.post(c, "predict", f"/v1/models/{m}/predict", m, content=data)

    def predict_json(self, c: httpx.Client, rng: random.Random) -> None:
        m, data = self.pick(rng)
        body = {"images": [{"b64": base64.b64encode(data).decode()}]}
        self.post(c, "predict", f"/v1/models/{m}/predict", m, json=body)

    def predict_batch(self, c: httpx.Client, rng: random.Random) -> None:
        m = rng.choice(self.models)
        files = [("file", (str(i), rng.choice(self.images[m]))) for i in range(4)]
        self.post(c, "predict batch of 4", f"/v1/models/{m}/predict", files=files)

    def infer_json(self, c: httpx.Client, rng: random.Random) -> None:
        m, data = self.pick(rng)
        body = {**infer_json(data), "outputs": TOP3}
        self.post(c, "v2 infer (JSON)", f"/v2/models/{m}/infer", json=body)

    def infer_binary(self, c: httpx.Client, rng: random.Random) -> None:
        m, data = self.pick(rng)
        body, headers = infer_binary(data)
        self.post(c, "v2 infer (binary)", f"/v2/models/{m}/infer", content=body, headers=headers)

    def catalog_cycle(self, c: httpx.Client, rng: random.Random) -> None:
        """create -> add (multipart, raw) -> search (image, item id) -> get -> delete."""
        with self.n_lock:
            self.n += 1
            name = f"soak-c{self.n}"
        m = "products"
        imgs, path = self.images[m], f"/v1/catalogs/{name}"
        r = self.post(c, "catalog create", "/v1/catalogs", json={"name": name, "model": m})
        if r is None or r.status_code != 201:
            return
        files = [("file", (str(i), rng.choice(imgs))) for i in range(4)]
        r = self.post(c, "catalog add", f"{path}/items", files=files, data={"label": "a"})
        self.post(c, "catalog add", f"{path}/items?label=b", content=rng.choice(imgs))
        self.post(
            c, "catalog search", f"{path}/search?k=3", files={"file": ("q", rng.choice(imgs))}
        )
        if r is not None and r.status_code == 201:
            body = {"item_id": r.json()["ids"][0], "k": 3}
            self.post(c, "catalog search", f"{path}/search", json=body)
        self.rec.call("catalog get", lambda: c.get(path))
        self.rec.call("catalog delete", lambda: c.delete(path))

    def bad(self, c: httpx.Client, rng: random.Random) -> None:
        op, path, kw = rng.choice(self.bad_cases)
        url = path.format(m=rng.choice(self.models))
        self.rec.call(f"bad: {op}", lambda: c.post(url, **kw), expect="4xx")  # type: ignore[arg-type]

    def probe(self, c: httpx.Client, rng: random.Random) -> None:
        path = rng.choice(["/readyz", "/v1/models"])
        self.rec.call(f"GET {path}", lambda: c.get(path))

    def client_loop(self, i: int, seed: int, stop: threading.Event) -> None:
        rng = random.Random(seed * 1000 + i)
        weights = [w for w, _ in self.ops]
        while not stop.is_set():
            # A fresh connection every 50 operations: connection churn is part of the load.
            with httpx.Client(base_url=self.base, timeout=60) as c:
                for _ in range(50):
                    if stop.is_set():
                        return
                    rng.choices(self.ops, weights)[0][1](c, rng)


def teach_loop(
    base: str, rec: Recorder, every: float, stop: threading.Event, done: list[float]
) -> None:
    """A small teach job every `every` s (the first after 5 s), each for a new model name."""
    imgs, n = teach_images(), 0
    while not stop.wait(every if n else min(every, 5.0)):
        n += 1
        with httpx.Client(base_url=base, timeout=60) as c:
            if teach_once(c, rec, f"soak-t{n}", imgs):
                done.append(time.monotonic() - rec.t0)


def teach_once(c: httpx.Client, rec: Recorder, model: str, imgs: dict[str, list[bytes]]) -> bool:
    """catalog -> 2 x 4 labelled items -> train -> poll the job -> predict and infer with the
    taught model -> delete it -> predict again (404) -> delete the catalog."""
    cat = f"/v1/catalogs/{model}-pics"
    body = {"name": f"{model}-pics", "model": "products"}
    r = rec.call("teach: catalog create", lambda: c.post("/v1/catalogs", json=body))
    if r is None or r.status_code != 201:
        return False
    for label, datas in imgs.items():
        files = [("file", (f"{i}.png", d)) for i, d in enumerate(datas)]
        rec.call(
            "teach: catalog add",
            lambda f=files, lb=label: c.post(f"{cat}/items", files=f, data={"label": lb}),
        )  # type: ignore[misc]
    r = rec.call("teach: train", lambda: c.post(f"{cat}/train", json={"model": model}))
    job: dict[str, object] = {}
    if r is not None and r.status_code == 202:
        job_url, deadline = r.headers["location"], time.monotonic() + 60
        while time.monotonic() < deadline:
            r = rec.call("teach: job poll", lambda: c.get(job_url))
            job = r.json() if r is not None and r.status_code == 200 else {}
            if job.get("status") not in ("queued", "running"):
                break
            time.sleep(0.2)
        if job.get("status") != "succeeded":
            with rec.lock:
                rec.errors.append(f"teach job {model}: {job.get('status')} {job.get('error')}")
    if job.get("status") == "succeeded":
        probe, url = imgs["coat"][0], f"/v1/models/{model}/predict"
        for _ in range(3):
            rec.call("teach: predict taught", lambda: c.post(url, content=probe))
        body = infer_json(probe)
        rec.call("teach: v2 infer taught", lambda: c.post(f"/v2/models/{model}/infer", json=body))
        rec.call("teach: delete model", lambda: c.delete(f"/v1/models/{model}"))
        rec.call("teach: predict deleted", lambda: c.post(url, content=probe), expect="4xx")
    rec.call("teach: catalog delete", lambda: c.delete(cat))
    return job.get("status") == "succeeded"


def metrics_loop(
    base: str, rec: Recorder, sizes: list[tuple[float, int]], stop: threading.Event
) -> None:
    """A /metrics scrape every 15 s, as Prometheus would; its body size is kept."""
    with httpx.Client(base_url=base, timeout=60) as c:
        while not stop.wait(15.0):
            r = rec.call("GET /metrics", lambda: c.get("/metrics"))
            if r is not None and r.status_code == 200:
                sizes.append((time.monotonic() - rec.t0, len(r.content)))


# -- sampling the server process ---------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the load started
    rss_mb: float
    fds: int
    threads: int


def read_proc(pid: int) -> tuple[float, int, int]:
    """(RSS MB, open fds, threads) of `pid` from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


def sample_loop(
    pid: int, t0: float, out: list[Sample], stop: threading.Event, every: float
) -> None:
    next_t = time.monotonic()
    while not stop.is_set():
        try:
            out.append(Sample(time.monotonic() - t0, *read_proc(pid)))
        except (OSError, AttributeError):  # the process is gone
            return
        next_t += every
        stop.wait(max(0.0, next_t - time.monotonic()))


# -- analysis ---------------------------------------------------------------------------------


def fit(ts: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b t: (slope b, its standard error, residual standard deviation)."""
    nan = float("nan")
    if len(ts) < 3 or len(set(ts)) < 2:
        return nan, nan, nan
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    sxx = sum((t - mt) ** 2 for t in ts)
    b = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / sxx
    sse = sum((y - my - b * (t - mt)) ** 2 for t, y in zip(ts, ys, strict=True))
    sd = (sse / (len(ts) - 2)) ** 0.5
    return b, sd / sxx**0.5, sd


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def resource_row(
    samples: list[Sample], key: str, warm_s: float, total_s: float
) -> dict[str, float]:
    """start, after warm-up, peak, end, medians of the 2nd and last fifths, slope per minute
    after the warm-up with its standard error, residual sd."""
    ys = [float(getattr(s, key)) for s in samples]
    after = [(s.t / 60, y) for s, y in zip(samples, ys, strict=True) if s.t >= warm_s]
    slope, se, sd = fit([t for t, _ in after], [y for _, y in after])

    def median_in(lo: float, hi: float) -> float:
        vals = [y for s, y in zip(samples, ys, strict=True) if lo <= s.t / total_s < hi]
        return statistics.median(vals) if vals else float("nan")

    warm = after[0][1] if after else float("nan")
    return {
        "start": ys[0],
        "warm": warm,
        "peak": max(ys),
        "end": ys[-1],
        "fifth2": median_in(0.2, 0.4),
        "fifth5": median_in(0.8, 2.0),
        "slope": slope,
        "se": se,
        "sd": sd,
    }


# -- the report -------------------------------------------------------------------------------


def report_resources(samples: list[Sample], warm_s: float, total_s: float, taught: int) -> None:
    print(
        "| resource | start | after warm-up | peak | end | median 2nd fifth | median last fifth "
        "| slope after warm-up, per min (std err) | residual sd |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for key, label, f in (
        ("rss_mb", "RSS MB", ".1f"),
        ("fds", "open fds", ".0f"),
        ("threads", "threads", ".0f"),
    ):
        r = rows[key] = resource_row(samples, key, warm_s, total_s)
        print(
            f"| {label} | {r['start']:{f}} | {r['warm']:{f}} | {r['peak']:{f}} | {r['end']:{f}} "
            f"| {r['fifth2']:{f}} | {r['fifth5']:{f}} | {r['slope']:+.3f} ({r['se']:.3f}) | {r['sd']:.2f} |"
        )
    rss, span = rows["rss_mb"], (samples[-1].t - warm_s) / 60
    print(
        f"\nRSS after warm-up: {rss['slope']:+.3f} MB/min (std err {rss['se']:.3f}, which understates: "
        f"samples are autocorrelated), i.e. {rss['slope'] * span:+.1f} MB over the {span:.1f} measured "
        f"minutes against a residual sd of {rss['sd']:.1f} MB; median of the last fifth vs the second: "
        f"{rss['fifth5'] - rss['fifth2']:+.1f} MB ({rss['fifth5'] / rss['fifth2']:.3f}x); if it went "
        f"on linearly: {rss['slope'] * 60 * 24:+.0f} MB a day"
    )
    grown = rows["threads"]["end"] - rows["threads"]["warm"]
    if taught:
        print(
            f"threads after warm-up {grown:+.0f} while {taught} taught models were made, used and "
            f"deleted after it ({grown / taught:+.2f} per model)"
        )


def report_requests(calls: list[Call], minutes: float) -> None:
    by_op: dict[str, list[Call]] = collections.defaultdict(list)
    for c in calls:
        by_op[c.op].append(c)
    print(
        "| operation | expect | n | 2xx | 4xx | 5xx | no answer | unexpected | statuses | p50 ms | p99 ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for op in sorted(by_op, key=lambda o: (o.startswith(("bad", "teach")), o)):
        cs = by_op[op]
        cls = collections.Counter(c.status // 100 for c in cs)
        codes = " ".join(
            f"{s}x{n}" for s, n in sorted(collections.Counter(c.status for c in cs).items())
        )
        ms = [c.ms for c in cs]
        print(
            f"| {op} | {cs[0].expect} | {len(cs)} | {cls[2]} | {cls[4]} | {cls[5]} | {cls[0]} "
            f"| {sum(map(unexpected, cs))} | {codes} | {statistics.median(ms):.1f} | {p99(ms):.1f} |"
        )
    t = collections.Counter(c.status // 100 for c in calls)
    print(
        f"\nrequests: {len(calls):,} in {minutes:.1f} min ({len(calls) / (minutes * 60):.1f}/s): "
        f"2xx {t[2]:,}, 3xx {t[3]}, 4xx {t[4]:,}, 5xx {t[5]}, no answer {t[0]}"
    )


def report_latency(calls: list[Call], total_s: float) -> None:
    preds = [c for c in calls if c.op == "predict" and c.status == 200]
    print("predict, one image (200s): the first fifth of the run against the last fifth")
    print(
        "| model | n first | p50 ms | p99 ms | n last | p50 ms | p99 ms | p50 last/first | p99 last/first |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in [*sorted({c.model for c in preds}), "all"]:
        mine = [c for c in preds if m in ("all", c.model)]
        first = [c.ms for c in mine if c.t < total_s / 5]
        last = [c.ms for c in mine if c.t >= total_s * 4 / 5]
        a50, a99, b50, b99 = (percentile(v, q) for v in (first, last) for q in (50, 99))
        print(
            f"| {m} | {len(first)} | {a50:.1f} | {a99:.1f} | {len(last)} | {b50:.1f} | {b99:.1f} "
            f"| {b50 / a50:.2f} | {b99 / a99:.2f} |"
        )


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
    base, stopped = f"http://127.0.0.1:{port}", {}
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
