"""SQLite plumbing of the embedded catalog store: schema, row reading and decoding, per-thread
connections (WAL, synchronous=FULL) and write/read transactions."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.catalog.types import ImageRef, ItemRecord, ModelRef, missing_catalog
from app.errors import ServiceError
from app.fsutil import database_gone
from app.jsontext import stored_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS catalogs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    dim INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    item_count INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    catalog_id INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    label TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    image_sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (catalog_id, item_id)
);
CREATE INDEX IF NOT EXISTS items_label ON items (catalog_id, label, item_id);
CREATE INDEX IF NOT EXISTS items_image ON items (image_sha256);
CREATE TABLE IF NOT EXISTS deletions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    catalog_id INTEGER NOT NULL,
    item_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deletions_catalog ON deletions (catalog_id, seq);
"""
ITEM_COLS = "item_id, label, metadata, image_sha256, content_type, width, height, created_at"
_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA))


def schema_gone(exc: BaseException) -> ServiceError | None:
    """StorageUnavailable when `exc` says one of this schema's own tables does not exist: the
    database file was replaced (by an empty one) under the running server. Any other missing
    table is a bug in a query and stays a 500."""
    if isinstance(exc, sqlite3.OperationalError):
        found = re.fullmatch(r"no such table: (?:main\.)?(\w+)", str(exc))
        if found is not None and found.group(1) in _TABLES:
            return database_gone()
    return None


@dataclass(frozen=True)
class Row:
    id: int
    name: str
    description: str
    model: ModelRef
    created_at: str
    item_count: int
    epoch: int
    version: int


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def item_from_row(r: Sequence[Any]) -> ItemRecord:
    return ItemRecord(
        id=r[0],
        label=r[1],
        metadata=stored_json(r[2]),
        image=ImageRef(sha256=r[3], content_type=r[4], width=r[5], height=r[6]),
        created_at=datetime.fromisoformat(r[7]),
    )


def catalog_row(conn: sqlite3.Connection, name: str) -> Row:
    """The catalogs row of `name`, or CatalogNotFound."""
    r = conn.execute(
        "SELECT id, name, description, model, model_version, model_sha256, dim, created_at,"
        " item_count, epoch, version FROM catalogs WHERE name = ?",
        (name,),
    ).fetchone()
    if r is None:
        raise missing_catalog(name, [n for (n,) in conn.execute("SELECT name FROM catalogs")])
    return Row(
        id=r[0],
        name=r[1],
        description=r[2],
        model=ModelRef(name=r[3], version=r[4], sha256=r[5], dim=r[6]),
        created_at=r[7],
        item_count=r[8],
        epoch=r[9],
        version=r[10],
    )


_SQLITE_READONLY = 8  # the primary result code of a write refused on a read-only connection
_SEQS_PER_QUERY = 4096  # well under SQLite's limit on parameters (32,766)


def items_by_seq(conn: sqlite3.Connection, seqs: list[int]) -> dict[int, ItemRecord]:
    """The items with these `seq` keys (faiss ids), by key; those deleted meanwhile are absent."""
    out: dict[int, ItemRecord] = {}
    for start in range(0, len(seqs), _SEQS_PER_QUERY):
        part = seqs[start : start + _SEQS_PER_QUERY]
        marks = ",".join("?" * len(part))
        rows = conn.execute(f"SELECT seq, {ITEM_COLS} FROM items WHERE seq IN ({marks})", part)
        out.update((r[0], item_from_row(r[1:])) for r in rows)
    return out


class Connections:
    """One SQLite connection per thread on `db_path`, closed together. A thread that has
    ended cannot use its connection again, so each new connection first closes those of
    threads that are gone: the server's thread pool retires idle threads and starts new ones,
    and without this every one of them left a connection (2 fds and its page cache) open until
    the catalog closed (bench/soak.py measured about one fd a minute)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._local = threading.local()
        self._conns: dict[threading.Thread, sqlite3.Connection] = {}
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.closed = False

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.closed:
                raise RuntimeError("catalog store is closed")
            conn = sqlite3.connect(
                self.db_path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            # FULL: a commit is on disk (WAL fsynced) before it returns, so a 201 survives kill -9.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._conns_lock:
                for thread in [t for t in self._conns if not t.is_alive()]:
                    with suppress(sqlite3.Error):
                        self._conns.pop(thread).close()
                self._conns[threading.current_thread()] = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (IMMEDIATE: takes the write lock up front, no upgrade deadlocks)."""
        conn = self.conn()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_READONLY:
                    self._forget(conn)
                raise

    def _forget(self, conn: sqlite3.Connection) -> None:
        """Close this thread's connection: the next one is opened afresh. SQLite opens a
        database it cannot write read-only, in silence, and such a connection stays read-only:
        connections that threads opened while the data folder was read-only refused every
        write for good once it was writable again, until a restart (round 43)."""
        self._local.conn = None
        with self._conns_lock:
            self._conns.pop(threading.current_thread(), None)
        with suppress(sqlite3.Error):
            conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several SELECTs."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self.closed = True
        with self._conns_lock:
            for conn in self._conns.values():
                with suppress(sqlite3.Error):
                    conn.close()
            self._conns.clear()
        self._local = threading.local()
