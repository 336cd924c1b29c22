"""The Milvus store through an outage and a racing delete, on a real Milvus server (round 43,
two replicas sharing one Milvus): /readyz said `catalog_store: open` all through an outage,
its 503s carried no Retry-After, and a search racing a delete on another replica answered
503 "the store failed" instead of 404."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

from app.catalog.milvus_base import PROBE_S, STALE_S
from app.catalog.types import CatalogNotFound, ModelRef, StoreUnavailable
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # a Milvus server


class Stall:
    """A TCP forwarder between the store and Milvus that can stop passing bytes on and start
    again: an outage (a hung server, a partitioned network) that leaves the session's Milvus,
    which other tests use, untouched."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.port = upstream, free_port()
        self.flowing = threading.Event()
        self.flowing.set()
        listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            down, _ = listener.accept()
            up = socket.create_connection(self.upstream)
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                self.flowing.wait()
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)


def test_reachable_follows_an_outage_and_its_503s_say_when_to_retry(milvus_url: str) -> None:
    from app.catalog.milvus import MilvusStore

    real = urlsplit(milvus_url)
    link = Stall((real.hostname or "127.0.0.1", real.port or 19530))
    store = MilvusStore(f"milvus://127.0.0.1:{link.port}", prefix="imgclass_outage_", timeout_s=2)
    store.open()
    quiet = MilvusStore(f"milvus://127.0.0.1:{link.port}", prefix="imgclass_outage_", timeout_s=2)
    quiet.open()  # another worker's view: it makes no call during the outage
    try:
        assert store.reachable() and quiet.reachable()
        link.flowing.clear()
        with pytest.raises(StoreUnavailable) as info:
            store.list_catalogs()
        assert info.value.extra["retry_after_s"] == 5
        assert not store.reachable()
        time.sleep(3)
        assert not store.reachable()  # asked again meanwhile: still nothing
        deadline = time.monotonic() + STALE_S + 3 * PROBE_S
        while quiet.reachable():  # not heard from for STALE_S: asked, and no answer
            assert time.monotonic() < deadline, "a view that made no call still says reachable"
            time.sleep(0.2)
        link.flowing.set()
        deadline = time.monotonic() + 15
        while not store.reachable():  # asked again in the background, no request needed
            assert time.monotonic() < deadline, "still unreachable 15 s after the outage"
            time.sleep(0.2)
        assert store.list_catalogs() == []
        while not quiet.reachable():
            assert time.monotonic() < deadline + 15
            time.sleep(0.2)
    finally:
        quiet.close()
        with contextlib.suppress(Exception):
            store.client.drop_collection(store.registry)
        store.close()


def test_a_search_racing_a_delete_is_a_404(milvus_url: str) -> None:
    from app.catalog.milvus import MilvusStore

    store = MilvusStore(milvus_url, prefix="imgclass_race_")
    store.open()
    try:
        store.create_catalog("gone", ModelRef(name="m", version="1", sha256="0" * 64, dim=4))
        info = store._info("gone")
        store.client.drop_collection(info["collection"])  # as a delete does first
        with pytest.raises(CatalogNotFound, match="deleted while this request read it"):
            store.search("gone", np.eye(1, 4, dtype=np.float32), 3)
        assert store.reachable()
    finally:
        store.delete_catalog("gone")
        store.client.drop_collection(store.registry)
        store.close()
