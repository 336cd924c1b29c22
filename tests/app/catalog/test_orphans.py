"""Images written before a crash that fell between the image write and the store's commit
are collected at start-up; images items reference are kept."""

from __future__ import annotations

import fcntl
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from app.catalog.blobs import BlobStore
from app.imaging import ImageLimits
from app.ingest import thumbnails


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), value).save(buf, format="PNG")
    return buf.getvalue()


def test_orphan_images_are_collected_at_start_up(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "o", "model": "tiny"}).status_code == 201
        r = c.post("/v1/catalogs/o/items", files={"file": ("kept.png", _png(10), "image/png")})
        assert r.status_code == 201, r.text
        kept = r.json()["items"][0]["image"]["sha256"]
    # What a crash after BlobStore.write and before the commit leaves behind, plus the
    # temporary file of a write interrupted before its rename.
    root = tmp_path / "service-data" / "catalogs"
    blobs = BlobStore(root)
    data = _png(200)
    orphan = blobs.write([blobs.pending(data, thumbnails([data], ImageLimits(), 128)[0])])[0].sha256
    partial = blobs.image_path(orphan).parent / ".tmp-interrupted"
    partial.write_bytes(b"half")
    assert blobs.image_path(orphan).is_file() and blobs.thumbnail_path(orphan).is_file()

    with make_client() as c:  # restart on the same data folder
        assert c.get("/v1/catalogs/o/items").json()["total"] == 1
        assert c.get(r.json()["items"][0]["image_url"]).status_code == 200
    assert not blobs.image_path(orphan).exists()
    assert not blobs.thumbnail_path(orphan).exists()
    assert not partial.exists()
    assert blobs.image_path(kept).is_file() and blobs.thumbnail_path(kept).is_file()


def test_liveness_answers_while_the_catalog_store_opens_and_readiness_waits(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """Round 30: the catalog store was opened and its orphan images collected inside the
    lifespan, so a store slow to answer (a Milvus just restarted: 45 s) kept even /healthz
    waiting, long enough for a liveness probe to restart the server. Here the start-up check
    waits on the blob lock that another process (a build script, a replica) holds: the server
    answers /healthz at once, /readyz says `loading` until the check has run, then 200."""
    lock = tmp_path / "service-data" / "catalogs" / ".blobs.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: the server's flock waits
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            os.close(fd)

    safety = threading.Timer(20, release)  # the old code would wait in the lifespan for this
    safety.start()
    try:
        with make_client(load_in_background=True) as c:
            entered_while_held = not released.is_set()
            assert c.get("/healthz").status_code == 200
            registry = c.app.state.registry  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            while not registry.loading_finished and time.monotonic() < deadline:
                time.sleep(0.05)
            assert registry.loading_finished  # the models are served; the store check waits
            r = c.get("/readyz")
            assert (r.status_code, r.json()["status"]) == (503, "loading"), r.text
            release()
            deadline = time.monotonic() + 30
            while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c.get("/readyz").status_code == 200
            assert c.post("/v1/catalogs", json={"name": "o", "model": "tiny"}).status_code == 201
        assert entered_while_held
    finally:
        safety.cancel()
        release()
