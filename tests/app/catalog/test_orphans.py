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

import pytest
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


class HeldLock:
    """An exclusive flock on `path` taken through its own open file description, as another
    process (a build script, a second worker, a replica) holds it: the server's flock waits.
    Released by release(), or after `safety_s` (code that waits for it must not hang)."""

    def __init__(self, path: Path, safety_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.released = threading.Event()
        self._guard = threading.Lock()
        self._timer = threading.Timer(safety_s, self.release)
        self._timer.start()

    def release(self) -> None:
        with self._guard:
            if not self.released.is_set():
                self.released.set()
                self._timer.cancel()
                os.close(self.fd)


def _wait_for(check: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def test_liveness_answers_while_the_catalog_store_opens_and_readiness_waits(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """Round 30: the catalog store was opened and its orphan images collected inside the
    lifespan, so a store slow to answer (a Milvus just restarted: 45 s) kept even /healthz
    waiting, long enough for a liveness probe to restart the server. Here the start-up check
    waits on the blob lock that another process holds: the server answers /healthz at once,
    /readyz says `loading` until the check has run, then 200."""
    lock = HeldLock(tmp_path / "service-data" / "catalogs" / ".blobs.lock", safety_s=20)
    try:
        with make_client(load_in_background=True) as c:
            entered_while_held = not lock.released.is_set()
            assert c.get("/healthz").status_code == 200
            registry = c.app.state.registry  # type: ignore[attr-defined]
            assert _wait_for(lambda: registry.loading_finished)  # the models are served
            r = c.get("/readyz")
            assert (r.status_code, r.json()["status"]) == (503, "loading"), r.text
            assert (r.json()["loading"], r.json()["catalog_store"]) == ([], "opening")
            lock.release()
            assert _wait_for(lambda: c.get("/readyz").status_code == 200)
            assert c.get("/readyz").json()["catalog_store"] == "open"
            assert c.post("/v1/catalogs", json={"name": "o", "model": "tiny"}).status_code == 201
        assert entered_while_held
    finally:
        lock.release()


def test_a_request_while_the_store_opens_is_told_to_retry_at_once(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """Round 30: a catalog request sent while the start-up thread opened the store waited
    for it (28 s behind a Milvus just restarted). Here the store's open waits for the lock a
    second worker opening the same folder holds: a request gets 503 `not-ready` with
    Retry-After at once, and 200 once the store is open."""
    lock = HeldLock(tmp_path / "service-data" / "catalogs" / ".open.lock", safety_s=15)
    try:
        with make_client(load_in_background=True, default_catalogs={"tiny": "fm"}) as c:
            t0 = time.monotonic()
            r = c.get("/v1/catalogs")
            waited = time.monotonic() - t0
            assert not lock.released.is_set() and waited < 5, waited
            assert r.status_code == 503 and r.json()["type"] == "/problems/not-ready", r.text
            assert r.headers["Retry-After"] == "2" and "still opening" in r.json()["detail"]
            # round 31: predict?similar=k through the model's default catalog said 422 "no
            # default catalog" (final-looking, no Retry-After) while the store opened
            registry = c.app.state.registry  # type: ignore[attr-defined]
            assert _wait_for(lambda: registry.loading_finished)
            r = c.post("/v1/models/tiny/predict?similar=2", content=_png(10))
            assert r.status_code == 503 and r.json()["type"] == "/problems/not-ready", r.text
            assert r.headers["Retry-After"] == "2"
            assert c.get("/v1/models/tiny").status_code == 200  # the model itself is served
            lock.release()
            assert _wait_for(lambda: c.get("/v1/catalogs").status_code == 200)
    finally:
        lock.release()


def test_readiness_names_a_catalog_store_that_could_not_be_opened(
    make_client: Callable[..., TestClient],
) -> None:
    """A vector store that cannot be reached (nothing listens on its port) leaves the server
    ready for predictions, as before; /readyz now says `catalog_store: unavailable` (an
    operator saw "ready" while every catalog call answered 503) and catalogs say why."""
    pytest.importorskip("pymilvus")
    from tests.conftest import free_port

    with make_client(
        load_in_background=True, vector_store=f"milvus://127.0.0.1:{free_port()}"
    ) as c:
        assert _wait_for(lambda: c.get("/readyz").status_code == 200)
        assert c.get("/readyz").json()["catalog_store"] == "unavailable"
        r = c.get("/v1/catalogs")
        assert r.status_code == 503 and r.json()["type"] == "/problems/vector-store-unavailable"


def test_a_start_up_that_loads_models_in_the_lifespan_does_not_wait_for_the_store(
    make_client: Callable[..., TestClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 31: each of several workers loads its models in the lifespan (the parent deals
    connections to ready workers only), and there the store was still opened synchronously:
    /healthz waited the whole 28 s lock wait, and SIGTERM was not heard until it ended. Now it
    waits STORE_WAIT_S at most; catalog calls meanwhile get 503 `not-ready`."""
    import app.main

    monkeypatch.setattr(app.main, "STORE_WAIT_S", 0.5)
    lock = HeldLock(tmp_path / "service-data" / "catalogs" / ".open.lock", safety_s=20)
    try:
        t0 = time.monotonic()
        with make_client(load_in_background=False) as c:
            assert time.monotonic() - t0 < 10 and not lock.released.is_set()
            assert c.get("/healthz").status_code == 200
            assert c.get("/v1/models/tiny").status_code == 200
            r = c.get("/v1/catalogs")
            assert r.status_code == 503 and r.json()["type"] == "/problems/not-ready", r.text
            assert c.get("/readyz").json()["catalog_store"] == "opening"
            lock.release()
            assert _wait_for(lambda: c.get("/v1/catalogs").status_code == 200)
    finally:
        lock.release()
