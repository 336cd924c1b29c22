"""The space reserve (app.catalog.reserve): on a full disk a delete still runs, on the room a
reserve file kept for it. The real store and service on the tiny bundle; the full disk is
SQLite's own "database or disk is full" error, raised while the reserve file takes the room."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from app.catalog.reserve import RESERVE_BYTES, SpaceReserve
from tests.conftest import DATA, require

SQLITE_FULL = 13


def _disk_full() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = SQLITE_FULL  # type: ignore[attr-defined]
    return exc


def test_the_reserve_is_made_released_and_made_again(tmp_path: Path) -> None:
    reserve = SpaceReserve(tmp_path)
    assert reserve.ensure() and reserve.path.stat().st_size == RESERVE_BYTES
    assert reserve.release() and not reserve.path.exists()
    assert not reserve.release()  # nothing left to give
    assert reserve.ensure() and reserve.path.is_file()
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_delete_on_a_full_disk_runs_on_the_reserve(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deleting answered 507 on a full disk too (SQLite's journal needs room), so the space a
    # client was told to free could not be freed through the API.
    png = require(DATA / "photos" / "foolbox" / "fashionMNIST_00_9.png")
    with make_client() as c:
        service = c.app.state.catalogs  # type: ignore[attr-defined]
        assert service.reserve.path.is_file()  # made at start-up
        assert c.post("/v1/catalogs", json={"name": "f", "model": "tiny"}).status_code == 201
        for i in range(2):
            r = c.post(f"/v1/catalogs/f/items?id=i{i}", content=png.read_bytes())
            assert r.status_code == 201, r.text
        store = service.store
        delete = store.delete_item

        def full_while_reserved(*args: Any) -> Any:
            if service.reserve.path.exists():
                raise _disk_full()
            return delete(*args)

        monkeypatch.setattr(store, "delete_item", full_while_reserved)
        assert c.delete("/v1/catalogs/f/items/i0").status_code == 204
        assert c.get("/v1/catalogs/f/items/i0").status_code == 404
        assert service.reserve.path.is_file()  # made again: this disk has room
        # With no reserve to give, the 507 stands.
        monkeypatch.setattr(service.reserve, "release", lambda: False)
        r = c.delete("/v1/catalogs/f/items/i1")
        assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text
