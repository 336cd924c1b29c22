"""Two replicas, one data volume: teach on replica A, serve on replica B (scripts/ci-docker).

Replica A gets a `products` catalog with 6 real Fashion-MNIST test images per class (sneaker,
bag), teaches `ci-taught` from it and reports the job; replica B must then report the same job,
load the taught bundle from the shared volume within --wait seconds (its registry polls the
disk) and classify held-out images of both classes, which were never in the catalog; deleting
the model on A must make it disappear on B. Writes carry the API key; one write without it must
be refused. Standard library only: it runs on the CI host's python3.

    python3 scripts/ci_replicas.py --a http://127.0.0.1:18081 --b http://127.0.0.1:18082 \
        --key KEY --fashion-mnist data/fashion-mnist
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any

MODEL = "ci-taught"
CATALOG = "ci-replicas"
# Fashion-MNIST class indices (the products bundle's labels.txt order) -> label to teach.
CLASSES = {7: "sneaker", 8: "bag"}
TAUGHT_PER_CLASS = 6
HELD_OUT_PER_CLASS = 2


class Failed(Exception):
    pass


def log(msg: str) -> None:
    print(f"[ci-replicas +{time.monotonic() - T0:5.1f}s] {msg}", flush=True)


def png_gray(pixels: bytes, width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG of `pixels` (row-major, one byte each)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\0" + pixels[y * width : (y + 1) * width] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def fashion_mnist_pngs(root: Path, per_class: int) -> dict[int, list[bytes]]:
    """The first `per_class` test images of each class in CLASSES, as PNG files."""
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        images = f.read()[16:]
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
        labels = f.read()[8:]
    out: dict[int, list[bytes]] = {c: [] for c in CLASSES}
    for i, y in enumerate(labels):
        if y in out and len(out[y]) < per_class:
            out[y].append(png_gray(images[i * 784 : (i + 1) * 784], 28, 28))
    return out


def call(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    ctype: str | None = None,
    key: str | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    if key:
        req.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, headers, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, dict(e.headers), e.read()
    try:
        data: Any = json.loads(raw) if raw else None
    except ValueError:
        data = raw[:300].decode("utf-8", "replace")
    return status, headers, data


def expect(status: int, want: int, what: str, data: Any) -> None:
    if status != want:
        raise Failed(f"{what}: HTTP {status}, expected {want}: {json.dumps(data)[:600]}")


def multipart(label: str, files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="label"\r\n\r\n{label}\r\n'.encode()
    ]
    for i, data in enumerate(files):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{label}{i}.png"\r\nContent-Type: image/png\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def poll(what: str, seconds: float, check: Any) -> Any:
    """Call check() until it returns something truthy, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not seen within {seconds:.0f} s")
        time.sleep(0.5)


def run(a: str, b: str, key: str, fm: Path, wait: float) -> None:
    pngs = fashion_mnist_pngs(fm, TAUGHT_PER_CLASS + HELD_OUT_PER_CLASS)
    for c, imgs in pngs.items():
        if len(imgs) < TAUGHT_PER_CLASS + HELD_OUT_PER_CLASS:
            raise Failed(f"only {len(imgs)} Fashion-MNIST test images of class {c} in {fm}")

    # The key is in force: a write without it is refused.
    body = json.dumps({"name": CATALOG, "model": "products"}).encode()
    s, _, d = call("POST", f"{a}/v1/catalogs", body=body, ctype="application/json")
    expect(s, 401, "A: POST /v1/catalogs without X-API-Key", d)
    s, _, d = call("POST", f"{a}/v1/catalogs", body=body, ctype="application/json", key=key)
    expect(s, 201, "A: POST /v1/catalogs", d)
    for c, label in CLASSES.items():
        form, ctype = multipart(label, pngs[c][:TAUGHT_PER_CLASS])
        s, _, d = call("POST", f"{a}/v1/catalogs/{CATALOG}/items", body=form, ctype=ctype, key=key)
        expect(s, 201, f"A: POST /v1/catalogs/{CATALOG}/items ({label})", d)
    log(
        f"A: catalog {CATALOG!r} on products: {TAUGHT_PER_CLASS} Fashion-MNIST test images x {sorted(CLASSES.values())}"
    )

    s, h, d = call(
        "POST",
        f"{a}/v1/catalogs/{CATALOG}/train",
        body=json.dumps({"model": MODEL}).encode(),
        ctype="application/json",
        key=key,
    )
    expect(s, 202, f"A: POST /v1/catalogs/{CATALOG}/train", d)
    job_path = h.get("Location") or h.get("location") or ""
    if not job_path.startswith("/v1/jobs/"):
        raise Failed(f"A: train answered no job Location header: {h}")

    def job_done() -> Any:
        s, _, d = call("GET", a + job_path)
        expect(s, 200, f"A: GET {job_path}", d)
        return d if d["status"] not in ("queued", "running") else None

    job = poll(f"A: job {job_path} finishing", 30, job_done)
    if job["status"] != "succeeded":
        raise Failed(f"A: job {job_path} ended {job['status']}: {json.dumps(job)[:600]}")
    log(f"A: job {job_path} succeeded (model {MODEL}, version {job['result']['version']})")

    # Replica B: the job is a file on the shared volume, the bundle too.
    s, _, d = call("GET", b + job_path)
    expect(s, 200, f"B: GET {job_path} (jobs are files on the shared volume)", d)
    if d["status"] != "succeeded":
        raise Failed(f"B: reports job {job_path} as {d['status']}, A as succeeded")
    t = time.monotonic()
    info = poll(
        f"B: GET /v1/models/{MODEL} answering 200 (registry poll of the shared volume)",
        wait,
        lambda: (lambda r: r[2] if r[0] == 200 else None)(call("GET", f"{b}/v1/models/{MODEL}")),
    )
    log(
        f"B: serves {MODEL} version {info.get('version')} {time.monotonic() - t:.1f} s after the job ended"
    )
    right = 0
    for c, label in CLASSES.items():
        for img in pngs[c][TAUGHT_PER_CLASS:]:
            s, _, d = call("POST", f"{b}/v1/models/{MODEL}/predict", body=img, ctype="image/png")
            expect(s, 200, f"B: POST /v1/models/{MODEL}/predict", d)
            top = d["results"][0]["predictions"][0]
            if top["label"] not in CLASSES.values():
                raise Failed(
                    f"B: top-1 label {top['label']!r} is not one of the taught {sorted(CLASSES.values())}"
                )
            right += top["label"] == label
            log(f"B: held-out {label} image -> {top['label']!r} ({top['score']:.3f})")
    n = len(CLASSES) * HELD_OUT_PER_CLASS
    if right != n:
        raise Failed(f"B: {right} of {n} held-out Fashion-MNIST test images right (expected all)")

    s, _, d = call("DELETE", f"{a}/v1/models/{MODEL}", key=key)
    expect(s, 200, f"A: DELETE /v1/models/{MODEL}", d)
    t = time.monotonic()
    poll(
        f"B: GET /v1/models/{MODEL} answering 404 after the delete on A",
        wait,
        lambda: call("GET", f"{b}/v1/models/{MODEL}")[0] == 404,
    )
    log(f"B: {MODEL} gone (404) {time.monotonic() - t:.1f} s after DELETE on A")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="replica A base URL")
    p.add_argument("--b", required=True, help="replica B base URL")
    p.add_argument("--key", required=True, help="the replicas' IMGCLASS_API_KEY")
    p.add_argument("--fashion-mnist", type=Path, required=True, help="folder with t10k-*.gz")
    p.add_argument("--wait", type=float, default=30, help="seconds B may take to follow A")
    args = p.parse_args()
    try:
        run(args.a.rstrip("/"), args.b.rstrip("/"), args.key, args.fashion_mnist, args.wait)
    except (Failed, OSError, KeyError, TypeError, IndexError) as e:
        log(f"FAIL: {type(e).__name__ + ': ' if not isinstance(e, Failed) else ''}{e}")
        return 1
    log("passed: taught on A, served and deleted as seen from B")
    return 0


T0 = time.monotonic()
if __name__ == "__main__":
    sys.exit(main())
