"""When the machine misbehaves under a catalog write (disk full, database locked by another
process): a clear problem+json, nothing half-stored, and predictions keep working."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.fsutil import storage_error
from tests.app.catalog.test_api import images, problem  # noqa: F401  (fixture)

ClientFactory = Callable[..., TestClient]


def test_a_full_disk_is_a_507_and_stores_nothing(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC cannot be produced for real without mounting a small filesystem (which CI cannot),
    so the one low-level call that reports it on a full disk, os.fsync, raises it here; every
    layer above it (atomic_write, blobs, service, routes, error handlers) is the real code."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        real_fsync = os.fsync

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
        r = c.post("/v1/catalogs/fm/items", params={"id": "lost"}, content=images[0][0])
        body = problem(r, 507)
        assert body["type"] == "/problems/insufficient-storage"
        assert "full" in body["detail"]
        # Predictions still work while the disk is full.
        assert c.post("/v1/models/tiny/predict", content=images[1][0]).status_code == 200
        monkeypatch.setattr(os, "fsync", real_fsync)

        problem(c.get("/v1/catalogs/fm/items/lost"), 404)
        r = c.post("/v1/catalogs/fm/items", params={"id": "kept"}, content=images[2][0])
        assert r.status_code == 201, r.text
        ids = [i["id"] for i in c.get("/v1/catalogs/fm/items").json()["items"]]
        assert ids == ["kept"]


def test_a_write_waits_for_another_process_holding_the_database(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],  # noqa: F811
) -> None:
    """A real second SQLite connection holds an exclusive transaction for a second: the add
    waits (busy timeout) and succeeds instead of failing."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        r = c.post("/v1/catalogs/fm/items", params={"id": "a"}, content=images[0][0])
        assert r.status_code == 201, r.text
        db = c.app.state.settings.data_dir / "catalogs" / "catalogs.sqlite3"  # type: ignore[attr-defined]
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        released = threading.Event()

        def release() -> None:
            time.sleep(1.0)
            # Set before the ROLLBACK, not after: the add can only finish once the lock is
            # gone, and its answer may beat this thread back from the ROLLBACK call.
            released.set()
            holder.execute("ROLLBACK")

        releaser = threading.Thread(target=release)
        releaser.start()
        r2: Any = c.post("/v1/catalogs/fm/items", params={"id": "b"}, content=images[1][0])
        assert released.is_set()
        assert r2.status_code == 201, r2.text
        releaser.join(timeout=30)  # back from the ROLLBACK before its connection is closed
        holder.close()
        ids = sorted(i["id"] for i in c.get("/v1/catalogs/fm/items").json()["items"])
        assert ids == ["a", "b"]


def test_a_database_replaced_under_the_server_is_a_503(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],  # noqa: F811
) -> None:
    """The catalog database's tables gone under the running server (its file replaced by an
    empty one; here a second connection drops them): every catalog call was a 500 with a
    traceback (fuzz round 3 deleted a running server's data folder). Now a 503 that says what
    happened, and predictions keep working. (A database damaged before start-up was already
    a 503 vector-store-unavailable.)"""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        db = c.app.state.settings.data_dir / "catalogs" / "catalogs.sqlite3"  # type: ignore[attr-defined]
        with closing(sqlite3.connect(db)) as other:
            tables = other.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
            for (name,) in tables:
                other.execute(f'DROP TABLE "{name}"')
            other.commit()
        body = problem(c.get("/v1/catalogs/fm"), 503)
        assert "missing or damaged" in body["detail"]
        problem(c.post("/v1/catalogs/fm/items", content=images[0][0]), 503)
        problem(c.post("/v1/catalogs", json={"name": "n2", "model": "tiny"}), 503)
        assert c.post("/v1/models/tiny/predict", content=images[1][0]).status_code == 200


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_readyz_fails_when_the_data_folder_goes_away(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],  # noqa: F811
    how: str,
) -> None:
    """/readyz answered 200 after the running server's data folder was deleted (fuzz round
    3), while every catalog call answered 503: a load balancer kept sending traffic to a
    replica that could not store anything. Now it is 503 `storage-unavailable`; liveness and
    predictions are unaffected."""
    with make_client() as c:
        assert c.get("/readyz").json()["storage"] == "ok"
        data = c.app.state.settings.data_dir  # type: ignore[attr-defined]
        moved = data.with_name(data.name + "-old")
        data.rename(moved)
        if how == "replaced":
            data.mkdir()
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "storage-unavailable"
        assert r.json()["storage"] == "unavailable"
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/models/tiny/predict", content=images[1][0]).status_code == 200
        if how == "removed":  # put back: ready again
            moved.rename(data)
            assert c.get("/readyz").status_code == 200


def test_a_catalogs_folder_moved_aside_is_not_ready_and_writes_nothing(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],  # noqa: F811
) -> None:
    """Round 29: with only `<data>/catalogs` moved aside, every catalog call answered 503
    while /readyz said 200, storage "ok" (only the data folder itself was watched). Now
    /readyz is 503 storage-unavailable, a write recreates nothing, predictions work, and with
    the folder back everything stored is there."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        assert c.post("/v1/catalogs/fm/items?id=a", content=images[0][0]).status_code == 201
        catalogs = c.app.state.settings.data_dir / "catalogs"  # type: ignore[attr-defined]
        away = catalogs.with_name("catalogs-away")
        catalogs.rename(away)
        r = c.get("/readyz")
        assert (r.status_code, r.json()["status"]) == (503, "storage-unavailable"), r.text
        problem(c.post("/v1/catalogs/fm/items?id=b", content=images[1][0]), 503)
        problem(c.post("/v1/catalogs", json={"name": "n2", "model": "tiny"}), 503)
        assert not catalogs.exists()  # nothing recreated it
        assert c.post("/v1/models/tiny/predict", content=images[2][0]).status_code == 200
        away.rename(catalogs)
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/catalogs/fm/items/a/image").content == images[0][0]
        assert c.post("/v1/catalogs/fm/items?id=b", content=images[1][0]).status_code == 201


@pytest.mark.parametrize("part", ["teach", "models"])
def test_readyz_fails_when_a_folder_of_the_service_is_replaced(
    make_client: ClientFactory, part: str
) -> None:
    """The teach jobs and taught models folders are watched like the catalogs folder: replaced
    by another folder under the server, /readyz says so; put back, ready again."""
    with make_client() as c:
        folder = c.app.state.settings.data_dir / part  # type: ignore[attr-defined]
        folder.mkdir(exist_ok=True)
        assert c.get("/readyz").status_code == 200
        away = folder.with_name(part + "-away")
        folder.rename(away)
        folder.mkdir()
        assert c.get("/readyz").json()["status"] == "storage-unavailable"
        folder.rmdir()
        away.rename(folder)
        assert c.get("/readyz").status_code == 200


def test_writes_while_the_data_folder_is_away_are_refused_not_lost(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],  # noqa: F811
) -> None:
    """Fuzz round 4: with the data folder moved away, an item add answered 201, its row went
    into the moved database (SQLite's open connection) and its image into a new data folder
    the server created itself; a teach job and a taught model landed there too. Put back,
    the item had no image and the job and model were gone. Now every catalog and teach call
    answers 503 while the folder is away, nothing recreates it, and once it is back all works
    and nothing acknowledged is missing."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        assert c.post("/v1/catalogs/fm/items?id=a", content=images[0][0]).status_code == 201
        data = c.app.state.settings.data_dir  # type: ignore[attr-defined]
        away = data.with_name(data.name + "-away")
        data.rename(away)
        body = problem(c.post("/v1/catalogs/fm/items?id=b", content=images[1][0]), 503)
        assert (
            body["type"].endswith("storage-unavailable") and "removed or replaced" in body["detail"]
        )
        problem(c.post("/v1/catalogs", json={"name": "n2", "model": "tiny"}), 503)
        problem(c.get("/v1/catalogs/fm/items"), 503)
        problem(c.post("/v1/catalogs/fm/train", json={"model": "taught"}), 503)
        problem(c.delete("/v1/catalogs/fm/items/a"), 503)
        assert c.post("/v1/models/tiny/predict", content=images[2][0]).status_code == 200
        assert not data.exists()  # nothing recreated it
        away.rename(data)
        assert c.get("/v1/catalogs/fm/items/a/image").content == images[0][0]
        assert c.post("/v1/catalogs/fm/items?id=b", content=images[1][0]).status_code == 201
        assert c.get("/v1/catalogs/fm").json()["item_count"] == 2


def test_a_database_io_error_is_a_503() -> None:
    """SQLITE_IOERR (its -wal file removed or swapped under the server; fuzz round 4 saw
    'disk I/O error' as 500s) is the machine, not a bug."""
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = 10 | (13 << 8)  # type: ignore[attr-defined]  # SQLITE_IOERR_FSYNC
    mapped = storage_error(exc)
    assert mapped is not None and mapped.status == 503
