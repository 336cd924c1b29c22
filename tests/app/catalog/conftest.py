"""Catalog fixtures: stores of both backends (embedded, and a real Milvus server started here),
synthetic unit vectors, and a live app on the tiny bundle with a fresh data folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.catalog.embedded import EmbeddedStore
from app.catalog.index import IndexConfig
from app.catalog.store import CatalogStore
from app.catalog.types import ImageRef, ModelRef, NewItem, Vector
from app.main import create_app
from tests.conftest import ROOT, make_settings

DIM = 16
MILVUS_HINT = "run scripts/setup-milvus (installs the Milvus server into .venv-milvus)"
MILVUS_START_TIMEOUT_S = 120


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


# Milvus ------------------------------------------------------------------------------------
def _missing(reason: str) -> None:
    """In CI the Milvus backend must run: fail there, skip on a developer machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; {MILVUS_HINT}")
    pytest.skip(f"{reason}; {MILVUS_HINT}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """The wrapper ignores SIGTERM's meaning for its child: stop the whole group, then any
    straggler by PID."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        for k in kids:
            with contextlib.suppress(psutil.NoSuchProcess):
                k.send_signal(sig)
        _, alive = psutil.wait_procs(kids, timeout=5)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        if not alive:
            return


@pytest.fixture(scope="session")
def milvus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus 2.3 standalone server (PyPI `milvus`) on a free loopback port."""
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        _missing("pymilvus is not installed (pip install -e '.[milvus]')")
    exe = Path(os.environ.get("IMGCLASS_MILVUS_SERVER", ROOT / ".venv-milvus/bin/milvus-server"))
    if not exe.is_file():
        _missing(f"no Milvus server at {exe}")
    from pymilvus import MilvusClient

    data = tmp_path_factory.mktemp("milvus")
    for attempt in (1, 2):  # a start-up race in Milvus 2.3 (nil etcd client) can kill it once
        port = _free_port()
        log = (data / "wrapper.log").open("wb")
        proc = subprocess.Popen(
            [str(exe), "--data", str(data), "--proxy-port", str(port), *MILVUS_TEST_CONFIG],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches the server
        )
        try:
            url = _wait_ready(proc, data, MilvusClient)
        except _Died:
            _kill_tree(proc)
            log.close()
            if attempt == 2:
                pytest.fail(f"Milvus exited during start-up twice; see {data}/logs")
            continue
        except BaseException:
            _kill_tree(proc)
            log.close()
            raise
        break
    try:
        yield url
    finally:
        _kill_tree(proc)
        log.close()
        shutil.rmtree(data / "data", ignore_errors=True)


# Faster time ticks: Session-consistent reads after a write wait for the next tick (200 ms by
# default). Test speed only; production keeps Milvus's defaults.
MILVUS_TEST_CONFIG = ["--extra-config", "proxy.timeTickInterval=20"]


class _Died(Exception):
    pass


def _proxy_port(data: Path) -> int | None:
    """The port the server really uses: the wrapper moves on silently when one is taken."""
    cfg = data / "configs" / "milvus.yaml"
    if not cfg.is_file():
        return None
    section = None
    for line in cfg.read_text().splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            section = line.strip()[:-1]
        elif section == "proxy" and line.startswith("  port:"):
            return int(line.split(":", 1)[1].split("#")[0])
    return None


def _wait_ready(proc: subprocess.Popen[bytes], data: Path, client_cls: Any) -> str:
    import psutil

    deadline = time.monotonic() + MILVUS_START_TIMEOUT_S
    seen_server = False
    while True:
        if proc.poll() is not None:
            raise _Died
        # The wrapper neither exits nor reaps when the server dies: watch the child itself.
        try:
            kids = psutil.Process(proc.pid).children()
        except psutil.NoSuchProcess as exc:
            raise _Died from exc
        alive = [k for k in kids if k.status() != psutil.STATUS_ZOMBIE]
        seen_server = seen_server or bool(kids)
        if seen_server and not alive:
            raise _Died
        port = _proxy_port(data)
        if port is not None:
            try:
                client = client_cls(uri=f"http://127.0.0.1:{port}", timeout=2)
                client.list_collections()
                client.close()
                return f"milvus://127.0.0.1:{port}"
            except Exception:
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"Milvus not ready in {MILVUS_START_TIMEOUT_S} s; see {data}/logs")
        time.sleep(0.5)


# stores ------------------------------------------------------------------------------------
StoreFactory = Callable[..., CatalogStore]


@pytest.fixture(params=["embedded", "milvus"])
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
