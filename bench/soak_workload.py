"""What bench/soak.py sends and what it expects back: the images, the record of every call,
the client threads' weighted mix of operations, the teach cycle and the /metrics scrape."""

from __future__ import annotations

import base64
import gzip
import json
import random
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

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
        add = partial(c.post, f"{cat}/items", files=files, data={"label": label})
        rec.call("teach: catalog add", add)
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
        infer_body = infer_json(probe)
        rec.call(
            "teach: v2 infer taught",
            lambda: c.post(f"/v2/models/{model}/infer", json=infer_body),
        )
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
