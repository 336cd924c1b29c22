"""EmbeddedStore: SQLite (WAL, synchronous=FULL) is the truth; an index per catalog is a cache.

Items carry an AUTOINCREMENT key (`seq`, never reused) that is also their index id. Every write
bumps the catalog's `version`; a reader whose in-memory index is behind catches up from rows
with a higher `seq` and from the `deletions` log, so several processes (uvicorn workers, the
build script) can share one data folder. Reindexing bumps `epoch`, which forces a rebuild.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.catalog.cache import CatalogState, IndexCache, LiveIndex
from app.catalog.index import IndexConfig
from app.catalog.sqlite import (
    ITEM_COLS,
    SCHEMA,
    Connections,
    Row,
    catalog_row,
    item_from_row,
    items_by_seq,
    now,
)
from app.catalog.store import CatalogStore
from app.catalog.types import (
    CatalogExists,
    CatalogNotFound,
    CatalogRecord,
    DimensionMismatch,
    DuplicateItem,
    Hit,
    ItemNotFound,
    ItemPage,
    ItemRecord,
    ModelRef,
    NewItem,
    Vector,
    catalog_changed,
    check_item_vectors,
    check_queries,
)
from app.fsutil import file_lock, fsync_dir, make_dirs_durably

logger = logging.getLogger(__name__)
_SEARCH_ROUNDS = 4  # index searches per query batch while rows vanish under it


class EmbeddedStore(CatalogStore):
    """Catalogs under `root`: catalogs.sqlite3 (+ WAL) and index/ snapshots of big indexes."""

    kind = "embedded"

    def __init__(self, root: Path, cfg: IndexConfig | None = None) -> None:
        self.root = root
        self.cfg = cfg or IndexConfig()
        self.db_path = root / "catalogs.sqlite3"
        self.snapshot_dir = root / "index"
        self._db = Connections(self.db_path)
        self._conn = self._db.conn
        self._tx = self._db.tx
        self._read = self._db.read
        self._cache = IndexCache(self.cfg, self.snapshot_dir, self._conn, self._read)

    # plumbing -----------------------------------------------------------------------------
    def open(self) -> None:
        self._db.closed = False
        make_dirs_durably(self.root)
        # One process at a time: switching a new database to WAL takes an exclusive lock that
        # SQLite's busy timeout does not wait for, so two workers opening a fresh data folder
        # together failed half the time ("database is locked", a 503 and an ERROR line).
        with file_lock(self.root / ".open.lock"):
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        fsync_dir(self.root)  # the database and its WAL file are new names in root

    def describe(self) -> str:
        return f"embedded (SQLite + in-memory indexes) at {self.db_path}"

    def close(self) -> None:
        self._cache.close()
        self._db.close()

    def _record(self, row: Row) -> CatalogRecord:
        kind = self._cache.kind_of(row.id, row.epoch, row.item_count)
        return CatalogRecord(
            name=row.name,
            description=row.description,
            model=row.model,
            created_at=datetime.fromisoformat(row.created_at),
            item_count=row.item_count,
            index=f"faiss {kind}" if kind.startswith("hnsw") else f"exact {kind}",
        )

    # catalogs -----------------------------------------------------------------------------
    def create_catalog(self, name: str, model: ModelRef, description: str = "") -> CatalogRecord:
        with self._tx() as conn:
            try:
                conn.execute(
                    "INSERT INTO catalogs (name, description, model, model_version, model_sha256,"
                    " dim, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, description, model.name, model.version, model.sha256, model.dim, now()),
                )
            except sqlite3.IntegrityError as exc:
                raise CatalogExists(f"A catalog named {name!r} already exists.") from exc
            row = catalog_row(conn, name)
        return self._record(row)

    def get_catalog(self, name: str) -> CatalogRecord:
        return self._record(catalog_row(self._conn(), name))

    def count_catalogs(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM catalogs").fetchone()[0])

    def list_catalogs(self) -> list[CatalogRecord]:
        conn = self._conn()
        names = [r[0] for r in conn.execute("SELECT name FROM catalogs ORDER BY name")]
        out: list[CatalogRecord] = []
        for n in names:
            with suppress(CatalogNotFound):  # deleted meanwhile
                out.append(self._record(catalog_row(conn, n)))
        return out

    def delete_catalog(self, name: str) -> set[str]:
        with self._tx() as conn:
            row = catalog_row(conn, name)
            shas = {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT image_sha256 FROM items WHERE catalog_id = ?", (row.id,)
                )
            }
            conn.execute("DELETE FROM items WHERE catalog_id = ?", (row.id,))
            conn.execute("DELETE FROM deletions WHERE catalog_id = ?", (row.id,))
            conn.execute("DELETE FROM catalogs WHERE id = ?", (row.id,))
        self._cache.drop(row.id)
        return shas

    def rebind_catalog(
        self,
        name: str,
        model: ModelRef,
        vectors: dict[str, Vector],
        images: Mapping[str, str] | None = None,
    ) -> CatalogRecord:
        with self._tx() as conn:
            row = catalog_row(conn, name)
            now_images = dict(
                conn.execute(
                    "SELECT item_id, image_sha256 FROM items WHERE catalog_id = ?", (row.id,)
                ).fetchall()
            )
            if set(now_images) != set(vectors) or (
                images is not None and any(now_images[i] != images.get(i) for i in now_images)
            ):
                raise catalog_changed(name)
            for v in vectors.values():
                if v.shape != (model.dim,):
                    raise DimensionMismatch(f"vector of shape {v.shape}, expected ({model.dim},)")
            conn.executemany(
                "UPDATE items SET vector = ? WHERE catalog_id = ? AND item_id = ?",
                ((np.asarray(v, np.float32).tobytes(), row.id, i) for i, v in vectors.items()),
            )
            conn.execute(
                "UPDATE catalogs SET model = ?, model_version = ?, model_sha256 = ?, dim = ?,"
                " epoch = epoch + 1, version = version + 1 WHERE id = ?",
                (model.name, model.version, model.sha256, model.dim, row.id),
            )
            row = catalog_row(conn, name)
        return self._record(row)

    # items --------------------------------------------------------------------------------
    def add_items(
        self, name: str, items: Sequence[NewItem], embedded_sha: str | None = None
    ) -> list[ItemRecord]:
        stamp = now()
        ids = [it.id for it in items]
        dup = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
        if dup:
            raise DuplicateItem(f"Item ids repeated in the request: {', '.join(sorted(dup))}.")
        with self._tx() as conn:
            row = catalog_row(conn, name)
            model = row.model
            check_item_vectors(name, model.name, model.dim, items, model.sha256, embedded_sha)
            taken: list[str] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                taken += [
                    r[0]
                    for r in conn.execute(
                        f"SELECT item_id FROM items WHERE catalog_id = ? AND item_id IN ({marks})",
                        (row.id, *chunk),
                    )
                ]
            if taken:
                raise DuplicateItem(
                    f"Catalog {name!r} already has items with ids: {', '.join(sorted(taken)[:20])}.",
                    ids=sorted(taken),
                )
            conn.executemany(
                "INSERT INTO items (catalog_id, item_id, label, metadata, image_sha256,"
                " content_type, width, height, created_at, vector)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        row.id,
                        it.id,
                        it.label,
                        json.dumps(it.metadata, separators=(",", ":")),
                        it.image.sha256,
                        it.image.content_type,
                        it.image.width,
                        it.image.height,
                        stamp,
                        np.asarray(it.vector, np.float32).tobytes(),
                    )
                    for it in items
                ),
            )
            conn.execute(
                "UPDATE catalogs SET item_count = item_count + ?, version = version + 1"
                " WHERE id = ?",
                (len(items), row.id),
            )
        created = datetime.fromisoformat(stamp)
        return [
            ItemRecord(
                id=it.id, image=it.image, label=it.label, metadata=it.metadata, created_at=created
            )
            for it in items
        ]

    def get_item(self, name: str, item_id: str) -> ItemRecord:
        conn = self._conn()
        row = catalog_row(conn, name)
        r = conn.execute(
            f"SELECT {ITEM_COLS} FROM items WHERE catalog_id = ? AND item_id = ?",
            (row.id, item_id),
        ).fetchone()
        if r is None:
            raise ItemNotFound(f"Catalog {name!r} has no item {item_id!r}.")
        return item_from_row(r)

    def get_vector(self, name: str, item_id: str) -> Vector:
        conn = self._conn()
        row = catalog_row(conn, name)
        r = conn.execute(
            "SELECT vector FROM items WHERE catalog_id = ? AND item_id = ?", (row.id, item_id)
        ).fetchone()
        if r is None:
            raise ItemNotFound(f"Catalog {name!r} has no item {item_id!r}.")
        return np.frombuffer(r[0], dtype=np.float32).copy()

    def list_items(
        self, name: str, *, after: str | None = None, limit: int = 50, label: str | None = None
    ) -> ItemPage:
        with self._read() as conn:
            row = catalog_row(conn, name)
            where = "catalog_id = ?"
            args: list[Any] = [row.id]
            if label is not None:
                where += " AND label = ?"
                args.append(label)
            total = (
                row.item_count
                if label is None
                else conn.execute(f"SELECT COUNT(*) FROM items WHERE {where}", args).fetchone()[0]
            )
            if after is not None:
                where += " AND item_id > ?"
                args.append(after)
            rows = conn.execute(
                f"SELECT {ITEM_COLS} FROM items WHERE {where} ORDER BY item_id LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        items = [item_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return ItemPage(items=items, next_after=items[-1].id if more else None, total=total)

    def delete_item(self, name: str, item_id: str) -> ItemRecord:
        with self._tx() as conn:
            row = catalog_row(conn, name)
            r = conn.execute(
                f"SELECT seq, {ITEM_COLS} FROM items WHERE catalog_id = ? AND item_id = ?",
                (row.id, item_id),
            ).fetchone()
            if r is None:
                raise ItemNotFound(f"Catalog {name!r} has no item {item_id!r}.")
            conn.execute("DELETE FROM items WHERE seq = ?", (r[0],))
            conn.execute(
                "INSERT INTO deletions (catalog_id, item_seq) VALUES (?, ?)", (row.id, r[0])
            )
            conn.execute(
                "UPDATE catalogs SET item_count = item_count - 1, version = version + 1"
                " WHERE id = ?",
                (row.id,),
            )
        return item_from_row(r[1:])

    def image_in_use(self, sha256: str) -> bool:
        r = (
            self._conn()
            .execute("SELECT 1 FROM items WHERE image_sha256 = ? LIMIT 1", (sha256,))
            .fetchone()
        )
        return r is not None

    # index --------------------------------------------------------------------------------
    def _synced(self, name: str) -> tuple[Row, LiveIndex]:
        """The catalog's row and its index, caught up with every committed write."""
        row = catalog_row(self._conn(), name)
        state = CatalogState(row.id, row.name, row.model.dim, row.epoch, row.version)
        return row, self._cache.get(state)

    def warm(self) -> None:
        """Load every catalog's index now (start-up), so the first search is not slow."""
        for rec in self.list_catalogs():
            t0 = time.perf_counter()
            with suppress(CatalogNotFound):
                _, live = self._synced(rec.name)
                logger.info(
                    "catalog %s: %d items, %s index ready in %.0f ms",
                    rec.name,
                    live.index.live,
                    live.index.kind,
                    (time.perf_counter() - t0) * 1e3,
                )

    def search(
        self,
        name: str,
        queries: Vector,
        k: int,
        *,
        label: str | None = None,
        exclude: Sequence[str] = (),
        fresh: bool = False,  # always: _synced reads what other processes committed
    ) -> list[list[Hit]]:
        row, live = self._synced(name)
        check_queries(name, row.model.name, row.model.dim, queries)
        conn = self._conn()
        skip: set[int] = set()
        if exclude:
            marks = ",".join("?" * len(exclude))
            skip = {
                r[0]
                for r in conn.execute(
                    f"SELECT seq FROM items WHERE catalog_id = ? AND item_id IN ({marks})",
                    (row.id, *exclude),
                )
            }
        # Items deleted between the index search and the row fetch drop out of the answer: it
        # is asked again for more, so k hits come back whenever k items exist (4 search threads
        # under a stream of deletes had 248 of 8,543 answers short).
        fetch = k + len(skip)
        for _ in range(_SEARCH_ROUNDS):
            with live.lock.read():
                allowed = self._cache.label_ids(live, label) if label is not None else None
                found = live.index.search(queries, fetch, allowed)
            results: list[list[Hit]] = []
            vanished = False
            per_query = [
                [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if int(i) not in skip]
                for ids, scores in found
            ]
            # one read (and one parsed record) per item, however many queries found it
            records = items_by_seq(conn, sorted({i for pairs in per_query for i, _ in pairs}))
            for pairs in per_query:
                hits = [Hit(records[i], s) for i, s in pairs if i in records]
                vanished |= len(hits) < min(k, len(pairs))
                results.append(hits[:k])
            if not vanished:
                break
            fetch *= 2
        return results

    def index_stats(self, name: str) -> dict[str, Any]:
        """Kind and size of the loaded index (bench and tests)."""
        row, live = self._synced(name)
        return {
            "kind": live.index.kind,
            "live": live.index.live,
            "tombstones": len(live.index.tombstones),
            "version": live.version,
            "items": row.item_count,
        }
