"""Catalog fixtures: stores of both backends (embedded, and Milvus on the server that
tests/milvus_server.py starts), synthetic unit vectors, and a live app on the tiny bundle with
a fresh data folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.bundle import load_bundle, read_metadata, write_bundle
from app.catalog.embedded import EmbeddedStore
from app.catalog.index import IndexConfig
from app.catalog.store import CatalogStore
from app.catalog.types import ImageRef, ModelRef, NewItem, Vector
from app.main import create_app
from tests.conftest import make_settings

DIM = 16


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> Vector:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def model_ref(dim: int = DIM, sha: str = "a" * 64) -> ModelRef:
    return ModelRef(name="m", version="1", sha256=sha, dim=dim)


def new_items(
    vectors: Vector, prefix: str = "it", labels: list[str] | None = None
) -> list[NewItem]:
    return [
        NewItem(
            id=f"{prefix}{i:05d}",
            image=ImageRef(sha256=f"{i:064x}", content_type="image/png", width=8, height=8),
            vector=v,
            label=labels[i] if labels else None,
            metadata={"n": i},
        )
        for i, v in enumerate(vectors)
    ]


# stores ------------------------------------------------------------------------------------
StoreFactory = Callable[..., CatalogStore]


# The Milvus backend needs a real Milvus server (seconds per test): part of the full run, not
# of the fast subset.
@pytest.fixture(params=["embedded", pytest.param("milvus", marks=pytest.mark.slow)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Open stores of one backend; calling it again gives a second view of the same data
    (a restart or another process)."""
    opened: list[CatalogStore] = []
    # One registry for the session (creating a Milvus collection costs ~2 s); tests clean up.
    prefix = "imgclass_test_"
    url = request.getfixturevalue("milvus_url") if request.param == "milvus" else ""

    def factory(cfg: IndexConfig | None = None) -> CatalogStore:
        store: CatalogStore
        if request.param == "embedded":
            store = EmbeddedStore(tmp_path / "catalogs", cfg or IndexConfig())
        else:
            from app.catalog.milvus import MilvusStore

            store = MilvusStore(url, prefix=prefix)
        store.open()
        opened.append(store)
        return store

    yield factory
    if request.param == "milvus" and opened:
        s = opened[-1]
        for rec in s.list_catalogs():
            s.delete_catalog(rec.name)
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store: StoreFactory) -> CatalogStore:
    return make_store()


# app ---------------------------------------------------------------------------------------
@pytest.fixture
def make_client(tiny_models_dir: Path, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """A live app on the tiny bundle with a data folder of its own; keyword arguments
    override settings. Entering the returned client runs the lifespan."""
    clients: list[TestClient] = []

    def factory(models_dir: Path | None = None, **overrides: object) -> TestClient:
        settings = make_settings(models_dir or tiny_models_dir, tmp_path, **overrides)
        c = TestClient(create_app(settings))
        clients.append(c)
        return c

    yield factory
    for c in clients:
        c.close()


def rebuild_bundle(bundle_dir: Path, version: str = "2") -> None:
    """A new build of the same model in place: same name, graph and behaviour, other bytes and
    sha256 (as a retrained or re-exported bundle would have)."""
    import onnx

    bundle = load_bundle(bundle_dir)
    proto = onnx.load(str(bundle.model_path))
    onnx.helper.set_model_props(proto, {"build": version})
    meta = read_metadata(bundle_dir / "metadata.json").model_copy(update={"version": version})
    write_bundle(
        bundle_dir, model_bytes=proto.SerializeToString(), metadata=meta, labels=bundle.labels
    )
