"""Images written before a crash that fell between the image write and the store's commit
are collected at start-up; images items reference are kept."""

from __future__ import annotations

import io
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
