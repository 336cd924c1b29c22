"""IndexCache: the in-memory index (exact or faiss HNSW) of each embedded catalog, kept in step with SQLite.

Built from the `items` rows (or loaded from an HNSW snapshot file), then caught up from rows with
a higher `seq` and from the `deletions` log whenever the catalog's `version` moved, so writes
of other processes become visible too. A catalog that grows past the HNSW threshold gets an
HNSW index built in the background and swapped in.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.catalog.flat import FlatIndex
from app.catalog.index import HnswIndex, Ids, IndexConfig, IndexKind, RWLock
from app.catalog.types import CatalogNotFound
from app.fsutil import atomic_write

logger = logging.getLogger(__name__)
_LABEL_CACHE = 64


@dataclass(frozen=True)
class CatalogState:
    """What the cache needs to know of a catalog row."""

    id: int
    name: str
    dim: int
    epoch: int
    version: int


@dataclass
class LiveIndex:
    """A catalog's index and how far it has caught up with SQLite."""

    catalog_id: int
    epoch: int
    version: int
    max_seq: int
    max_del: int
    index: FlatIndex | HnswIndex
    lock: RWLock = field(default_factory=RWLock)
    labels: dict[str, tuple[int, Ids]] = field(default_factory=dict)
    snapshot_version: int = -1


class IndexCache:
    def __init__(
        self,
        cfg: IndexConfig,
        snapshot_dir: Path,
        conn: Callable[[], sqlite3.Connection],
        read: Callable[[], AbstractContextManager[sqlite3.Connection]],
    ) -> None:
        self.cfg = cfg
        self.snapshot_dir = snapshot_dir
        self._conn = conn
        self._read = read
        self._live: dict[int, LiveIndex] = {}
        self._build_lock = threading.RLock()
        self._promoting: set[int] = set()

    def kind_of(self, catalog_id: int, epoch: int, items: int) -> str:
        """The index kind; one not in memory yet (until the catalog's first search) is the kind
        it will be, and says when it is made."""
        live = self._live.get(catalog_id)
        if live is not None and live.epoch == epoch:
            return live.index.kind
        if self._snapshot_path(catalog_id, epoch).is_file():
            return "hnsw (read from its snapshot on the first search)"
        return f"{self.cfg.kind_for(items)} (built on the first search)"

    def drop(self, catalog_id: int) -> None:
        with self._build_lock:
            self._live.pop(catalog_id, None)
        for p in self.snapshot_dir.glob(f"{catalog_id}-*.faiss"):
            p.unlink(missing_ok=True)

    def close(self) -> None:
        """Snapshot HNSW indexes that changed, then forget everything."""
        with self._build_lock:
            for live in list(self._live.values()):
                with suppress(Exception):
                    self._snapshot(live)
            self._live.clear()

    def get(self, row: CatalogState) -> LiveIndex:
        """The catalog's index, caught up with every write committed before `row` was read."""
        live = self._live.get(row.id)
        if live is None or live.epoch != row.epoch:
            with self._build_lock:
                live = self._live.get(row.id)
                if live is None or live.epoch != row.epoch:
                    live = self._load(row)
                    self._live[row.id] = live
        if live.version < row.version:
            with live.lock.write():
                if live.version < row.version:
                    self._catch_up(live)
        if (
            live.index.kind == "flat"
            and self.cfg.kind == "auto"
            and live.index.live > self.cfg.hnsw_threshold * 1.25
        ):
            self._promote_later(row)
        return live

    def _load(self, row: CatalogState) -> LiveIndex:
        """A snapshot file when one matches, else a full build from SQLite; then catch up."""
        live = self._load_snapshot(row)
        if live is None:
            live = self._build(row)
            if live.index.kind == "hnsw":
                self._snapshot(live)
        self._catch_up(live)
        return live

    def _build(self, row: CatalogState, kind: IndexKind | None = None) -> LiveIndex:
        with self._read() as conn:
            state = conn.execute(
                "SELECT epoch, version, item_count, dim FROM catalogs WHERE id = ?", (row.id,)
            ).fetchone()
            if state is None:
                raise CatalogNotFound(f"Catalog {row.name!r} was deleted.")
            epoch, version, count, dim = state
            max_del = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM deletions WHERE catalog_id = ?", (row.id,)
            ).fetchone()[0]
            chosen = kind or self.cfg.kind_for(count)
            index = FlatIndex(dim, self.cfg) if chosen == "flat" else HnswIndex(dim, self.cfg)
            max_seq = 0
            cur = conn.execute(
                "SELECT seq, vector FROM items WHERE catalog_id = ? ORDER BY seq", (row.id,)
            )
            while batch := cur.fetchmany(50_000):
                ids = np.fromiter((r[0] for r in batch), np.int64, len(batch))
                vecs = np.frombuffer(b"".join(r[1] for r in batch), np.float32).reshape(-1, dim)
                index.add(ids, vecs)
                max_seq = int(ids[-1])
        return LiveIndex(row.id, epoch, version, max_seq, max_del, index)

    def _catch_up(self, live: LiveIndex) -> None:
        """Apply rows added and deletions logged since the index last looked (caller holds write)."""
        with self._read() as conn:
            state = conn.execute(
                "SELECT epoch, version FROM catalogs WHERE id = ?", (live.catalog_id,)
            ).fetchone()
            if state is None or state[0] != live.epoch:
                return  # deleted or reindexed: the next _synced rebuilds
            rows = conn.execute(
                "SELECT seq, vector FROM items WHERE catalog_id = ? AND seq > ? ORDER BY seq",
                (live.catalog_id, live.max_seq),
            ).fetchall()
            dels = conn.execute(
                "SELECT seq, item_seq FROM deletions WHERE catalog_id = ? AND seq > ? ORDER BY seq",
                (live.catalog_id, live.max_del),
            ).fetchall()
        if rows:
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(
                -1, live.index.dim
            )
            live.index.add(ids, vecs)
            live.max_seq = int(ids[-1])
        if dels:
            live.index.remove(np.fromiter((d[1] for d in dels), np.int64, len(dels)))
            live.max_del = int(dels[-1][0])
        live.version = int(state[1])
        live.labels.clear()

    def _promote_later(self, row: CatalogState) -> None:
        """Grew past the exact-search size: build HNSW in the background, then swap it in."""
        with self._build_lock:
            if row.id in self._promoting:
                return
            self._promoting.add(row.id)

        def work() -> None:
            try:
                t0 = time.perf_counter()
                live = self._build(row, kind="hnsw")
                with self._build_lock:
                    old = self._live.get(row.id)
                    if old is not None and old.epoch == live.epoch:
                        self._live[row.id] = live
                        self._snapshot(live)
                logger.info(
                    "catalog %s promoted to HNSW (%d items) in %.1f s",
                    row.name,
                    live.index.live,
                    time.perf_counter() - t0,
                )
            except Exception:
                logger.exception("building the HNSW index of catalog %s failed", row.name)
            finally:
                with self._build_lock:
                    self._promoting.discard(row.id)

        threading.Thread(target=work, name=f"hnsw-{row.name}", daemon=True).start()

    def _snapshot_path(self, catalog_id: int, epoch: int) -> Path:
        return self.snapshot_dir / f"{catalog_id}-{epoch}.faiss"

    def _snapshot(self, live: LiveIndex) -> None:
        """Persist an HNSW index (costly to rebuild); flat ones rebuild from SQLite in seconds."""
        if live.index.kind != "hnsw" or live.snapshot_version == live.version:
            return
        with live.lock.read():
            head = {
                "epoch": live.epoch,
                "version": live.version,
                "max_seq": live.max_seq,
                "max_del": live.max_del,
            }
            data = live.index.to_bytes(head)
        atomic_write(self._snapshot_path(live.catalog_id, live.epoch), data)
        live.snapshot_version = head["version"]
        for old in self.snapshot_dir.glob(f"{live.catalog_id}-*.faiss"):
            if old.name != self._snapshot_path(live.catalog_id, live.epoch).name:
                old.unlink(missing_ok=True)

    def _load_snapshot(self, row: CatalogState) -> LiveIndex | None:
        path = self._snapshot_path(row.id, row.epoch)
        if not path.is_file():
            return None
        try:
            index, head = HnswIndex.from_bytes(path.read_bytes(), self.cfg)
        except Exception:
            logger.warning("index snapshot %s is unreadable; rebuilding from SQLite", path)
            return None
        if index.dim != row.dim or head.get("epoch") != row.epoch:
            return None
        if index.kind != self.cfg.kind_for(index.live):  # the settings changed (round 29)
            logger.info("index snapshot %s is %s; settings now say otherwise", path, index.kind)
            path.unlink(missing_ok=True)
            return None
        live = LiveIndex(
            row.id,
            row.epoch,
            int(head["version"]),
            int(head["max_seq"]),
            int(head["max_del"]),
            index,
        )
        live.snapshot_version = live.version
        return live

    def label_ids(self, live: LiveIndex, label: str) -> Ids:
        cached = live.labels.get(label)
        if cached is not None and cached[0] == live.version:
            return cached[1]
        rows = (
            self._conn()
            .execute(
                "SELECT seq FROM items WHERE catalog_id = ? AND label = ?", (live.catalog_id, label)
            )
            .fetchall()
        )
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        if len(live.labels) >= _LABEL_CACHE:
            live.labels.clear()
        live.labels[label] = (live.version, ids)
        return ids
