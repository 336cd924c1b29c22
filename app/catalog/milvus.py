"""MilvusStore: the catalog interface on a Milvus server, for catalogs that outgrow one machine.

One registry collection (`<prefix>catalogs`) maps catalog names to their bindings; each catalog
is a collection keyed by item id (VARCHAR primary key, so queries come back in id order) with
label, JSON metadata, image digest and the unit vector (HNSW, inner product). Requests use
Session consistency (a client reads its own writes), and every write ends with one Strong read
that waits until Milvus has applied it (MilvusBase._settle), so reads after the answer to a write
see it. Needs `pip install imgclass[milvus]`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np

from app.catalog.milvus_base import (
    BATCH,
    ITEM_FIELDS,
    MilvusBase,
    gone_is_missing,
    lit,
    record_item,
    unless_gone,
)
from app.catalog.store import CatalogStore
from app.catalog.types import (
    CatalogExists,
    CatalogRecord,
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
from app.errors import Conflict

logger = logging.getLogger(__name__)
EXACT_MAX = 20_000  # a short filtered search over at most this many items is ranked exactly


class MilvusStore(MilvusBase, CatalogStore):
    kind = "milvus"

    def _record(self, name: str, info: dict[str, Any]) -> CatalogRecord:
        return CatalogRecord(
            name=name,
            description=info.get("description", ""),
            model=ModelRef(**info["model"]),
            created_at=datetime.fromisoformat(info["created_at"]),
            item_count=self._count(info["collection"]),
            index=f"milvus HNSW ({info['collection']})",
        )

    # catalogs -----------------------------------------------------------------------------
    def create_catalog(self, name: str, model: ModelRef, description: str = "") -> CatalogRecord:
        from pymilvus import DataType

        with self._lock, self._errors():
            exists = self.client.query(  # Strong: another process may have just made it
                self.registry,
                filter=f"name == {lit(name)}",
                output_fields=["name"],
                consistency_level="Strong",
            )
            if exists:
                raise CatalogExists(f"A catalog named {name!r} already exists.")
            collection = f"{self.prefix}c_{uuid.uuid4().hex[:16]}"
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
            schema.add_field("label", DataType.VARCHAR, max_length=1024)
            schema.add_field("metadata", DataType.JSON)
            schema.add_field("image", DataType.VARCHAR, max_length=64)
            schema.add_field("content_type", DataType.VARCHAR, max_length=32)
            schema.add_field("width", DataType.INT32)
            schema.add_field("height", DataType.INT32)
            schema.add_field("created_at", DataType.VARCHAR, max_length=40)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=model.dim)
            idx = self.client.prepare_index_params()
            idx.add_index(
                field_name="vector", index_type="HNSW", metric_type="IP", params=self._hnsw
            )
            self.client.create_collection(
                collection, schema=schema, index_params=idx, consistency_level="Session"
            )
            self.client.load_collection(collection)
            info = {
                "collection": collection,
                "description": description,
                "model": {
                    "name": model.name,
                    "version": model.version,
                    "sha256": model.sha256,
                    "dim": model.dim,
                },
                "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
            self.client.insert(
                self.registry, [{"name": name, "info": json.dumps(info), "v": [0.0, 0.0]}]
            )
            # Durable (a Milvus killed before it flushed lost the row, leaving its collection
            # an orphan) and visible to every process before the 201.
            self.client.flush(self.registry)
            self._settle(self.registry, f"name == {lit(name)}")
        return self._record(name, info)

    def get_catalog(self, name: str) -> CatalogRecord:
        return self._record(name, self._info(name))

    def list_catalogs(self) -> list[CatalogRecord]:
        with self._errors():
            rows = self.client.query(
                self.registry, filter='name != ""', output_fields=["name", "info"], limit=16384
            )
        rows.sort(key=lambda r: r["name"])
        return [self._record(r["name"], json.loads(r["info"])) for r in rows]

    def delete_catalog(self, name: str) -> set[str]:
        with self._lock:
            info = self._info(name)
            shas: set[str] = set()
            for batch in self._pages(info["collection"], ["image"]):
                shas.update(e["image"] for e in batch)
            with self._errors():
                # The collection first: a failure after it leaves a row for an empty catalog
                # that a second delete removes. Row first, a flush that failed after it (a
                # Milvus just restarted) left a collection nothing named or dropped (round 30).
                with unless_gone():  # gone already: the row was all that was left
                    self.client.drop_collection(info["collection"])
                self.client.delete(self.registry, filter=f"name == {lit(name)}")
                self.client.flush(self.registry)  # durable, as create's row
                self._settle(self.registry, f"name == {lit(name)}")
        return shas

    def rebind_catalog(
        self,
        name: str,
        model: ModelRef,
        vectors: dict[str, Vector],
        images: Mapping[str, str] | None = None,
    ) -> CatalogRecord:
        with self._lock:
            info = self._info(name)
            if model.dim != info["model"]["dim"]:
                raise Conflict(
                    f"The model's embedding size changed ({info['model']['dim']} -> {model.dim}); "
                    "Milvus cannot change a collection's dimension: recreate the catalog."
                )
            rows: list[dict[str, Any]] = []
            for batch in self._pages(info["collection"], ITEM_FIELDS):
                rows.extend(batch)
            if {r["id"] for r in rows} != set(vectors) or (
                images is not None and any(r["image"] != images.get(r["id"]) for r in rows)
            ):
                raise catalog_changed(name)
            with self._errors():
                for start in range(0, len(rows), BATCH):
                    chunk = rows[start : start + BATCH]
                    for r in chunk:
                        r["vector"] = np.asarray(vectors[r["id"]], np.float32).tolist()
                    self.client.upsert(info["collection"], chunk)
                self._settle(info["collection"], 'id != ""')
                info["model"] = {
                    "name": model.name,
                    "version": model.version,
                    "sha256": model.sha256,
                    "dim": model.dim,
                }
                self.client.upsert(
                    self.registry, [{"name": name, "info": json.dumps(info), "v": [0.0, 0.0]}]
                )
                self._settle(self.registry, f"name == {lit(name)}")
        return self._record(name, info)

    # items --------------------------------------------------------------------------------
    def add_items(
        self, name: str, items: Sequence[NewItem], embedded_sha: str | None = None
    ) -> list[ItemRecord]:
        ids = [it.id for it in items]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise DuplicateItem(f"Item ids repeated in the request: {', '.join(dup)}.")
        info = self._info(name)
        dim = info["model"]["dim"]
        model = info["model"]
        check_item_vectors(name, model["name"], dim, items, model["sha256"], embedded_sha)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._lock, self._errors():
            taken: list[str] = []
            for start in range(0, len(ids), BATCH):
                chunk = ids[start : start + BATCH]
                taken += [
                    r["id"]
                    for r in self.client.query(
                        info["collection"],
                        filter=f"id in {json.dumps(chunk)}",
                        output_fields=["id"],
                    )
                ]
            if taken:
                raise DuplicateItem(
                    f"Catalog {name!r} already has items with ids: {', '.join(sorted(taken)[:20])}.",
                    ids=sorted(taken),
                )
            rows = [
                {
                    "id": it.id,
                    "label": it.label or "",
                    "metadata": it.metadata,
                    "image": it.image.sha256,
                    "content_type": it.image.content_type,
                    "width": it.image.width,
                    "height": it.image.height,
                    "created_at": now,
                    "vector": np.asarray(it.vector, np.float32).tolist(),
                }
                for it in items
            ]
            self._insert_all_or_nothing(info["collection"], rows)
        created = datetime.fromisoformat(now)
        return [
            ItemRecord(
                id=it.id, image=it.image, label=it.label, metadata=it.metadata, created_at=created
            )
            for it in items
        ]

    def _get(self, name: str, item_id: str, fields: list[str]) -> dict[str, Any]:
        info = self._info(name)
        with self._errors():
            rows = self.client.query(
                info["collection"], filter=f"id == {lit(item_id)}", output_fields=fields
            )
        if not rows:
            raise ItemNotFound(f"Catalog {name!r} has no item {item_id!r}.")
        row: dict[str, Any] = rows[0]
        return row

    def get_item(self, name: str, item_id: str) -> ItemRecord:
        return record_item(self._get(name, item_id, ITEM_FIELDS))

    def get_vector(self, name: str, item_id: str) -> Vector:
        return np.asarray(self._get(name, item_id, ["vector"])["vector"], dtype=np.float32)

    def list_items(
        self, name: str, *, after: str | None = None, limit: int = 50, label: str | None = None
    ) -> ItemPage:
        info = self._info(name)
        coll = info["collection"]
        label_expr = f"label == {lit(label)}" if label is not None else ""
        where = f"id > {lit(after or '')}" + (f" and {label_expr}" if label_expr else "")
        with self._errors():
            rows = self.client.query(coll, filter=where, output_fields=ITEM_FIELDS, limit=limit + 1)
        rows.sort(key=lambda e: e["id"])
        items = [record_item(r) for r in rows[:limit]]
        total = self._count(coll, label_expr or 'id != ""')
        more = len(rows) > limit
        return ItemPage(items=items, next_after=items[-1].id if more else None, total=total)

    def delete_item(self, name: str, item_id: str) -> ItemRecord:
        info = self._info(name)
        record = self.get_item(name, item_id)
        expr = f"id == {lit(item_id)}"
        with self._errors():
            self.client.delete(info["collection"], filter=expr)
            self._settle(info["collection"], expr)
        return record

    def image_in_use(self, sha256: str) -> bool:
        return bool(self.images_in_use([sha256]))

    def images_in_use(self, digests: Sequence[str]) -> set[str]:
        """Which of `digests` some item uses: one Strong query per catalog for up to 1,000
        digests (one per digest took start-up 6 minutes with 10,000 images, round 29), the
        catalogs asked at once. A Strong read waits 1.5-2 of Milvus's time ticks (about 0.3 s
        at its default 200 ms): one catalog after another, a delete took 1.3 s with five
        catalogs and start-up's check 10 s (round 30)."""
        found: set[str] = set()
        with self._errors():
            rows = self.client.query(
                self.registry, filter='name != ""', output_fields=["info"], limit=16384
            )
            colls = [json.loads(r["info"])["collection"] for r in rows]
            if not colls:
                return found
            with ThreadPoolExecutor(min(len(colls), 8), thread_name_prefix="in-use") as pool:
                for at in range(0, len(digests), BATCH):
                    ask = sorted(set(digests[at : at + BATCH]) - found)
                    if ask:
                        for hits in pool.map(lambda c, a=ask: self._images_in(c, a), colls):
                            found |= hits
        return found

    def _images_in(self, collection: str, digests: list[str]) -> set[str]:
        # A catalog whose collection is gone (dropped by a delete racing the listing) holds no
        # items; its error failed adds and deletes everywhere.
        hits: list[dict[str, Any]] = []
        with unless_gone():
            hits = self.client.query(  # Strong: another replica's item may use it
                collection,
                filter=f"image in {json.dumps(digests)}",
                output_fields=["image"],
                limit=16384,
                consistency_level="Strong",
            )
        return {h["image"] for h in hits}

    # search -------------------------------------------------------------------------------
    def search(
        self,
        name: str,
        queries: Vector,
        k: int,
        *,
        label: str | None = None,
        exclude: Sequence[str] = (),
        fresh: bool = False,
    ) -> list[list[Hit]]:
        info = self._info(name)
        dim = info["model"]["dim"]
        check_queries(name, info["model"]["name"], dim, queries)
        parts = []
        if label is not None:
            parts.append(f"label == {lit(label)}")
        if exclude:
            parts.append(f"id not in {json.dumps(list(exclude))}")
        coll, expr = info["collection"], " and ".join(parts)
        # Session reads see this client's writes; another replica's are seen once applied.
        # Strong waits for every write answered before the call.
        level = {"consistency_level": "Strong"} if fresh else {}
        rows = np.asarray(queries, np.float32)
        with self._errors(), gone_is_missing(name):
            res = self.client.search(
                coll,
                data=rows.tolist(),
                limit=k,
                filter=expr,
                output_fields=ITEM_FIELDS,
                search_params={"metric_type": "IP", "params": {"ef": max(self._ef, 2 * k)}},
                **level,
            )
            out = [
                [Hit(record_item({**h["entity"], "id": h["id"]}), float(h["distance"])) for h in hs]
                for hs in res
            ]
            out = self._confirmed(coll, out, level)
            if any(len(hits) < k for hits in out):
                out = self._exact_when_short(coll, expr, rows, k, out)
        return out

    def _confirmed(self, coll: str, out: list[list[Hit]], level: dict[str, str]) -> list[list[Hit]]:
        """Hits a query by id still finds: after a Milvus crash a deleted item came back in
        searches (score 1.0) while reads of it said 404 (round 29)."""
        ids = sorted({h.item.id for hits in out for h in hits})
        if not ids:
            return out
        rows = self.client.query(
            coll, filter=f"id in {json.dumps(ids)}", output_fields=["id"], **level
        )
        alive = {r["id"] for r in rows}
        return [[h for h in hits if h.item.id in alive] for hits in out]

    def _exact_when_short(
        self,
        coll: str,
        expr: str,
        rows: np.ndarray,
        k: int,
        out: list[list[Hit]],
    ) -> list[list[Hit]]:
        """Exactly k hits whenever k items match: HNSW with a filter (a label) came back short
        or empty on rows Milvus had not indexed yet (10,000 just added: 1 of 100 asked; after a
        restart, none, round 29), as could a search whose deleted hits were dropped. When more
        items match than came back, and at most EXACT_MAX do, they are ranked exactly."""
        matching = self._count(coll, expr or 'id != ""')
        if matching > EXACT_MAX or all(len(hits) >= min(k, matching) for hits in out):
            return out
        short = [q for q, hits in enumerate(out) if len(hits) < min(k, matching)]
        best: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in short]
        for page in self._pages(coll, ["vector", *ITEM_FIELDS[1:]], expr):  # 1,000 at a time
            scores = rows[short] @ np.asarray([e["vector"] for e in page], np.float32).T
            for j, row in enumerate(scores):
                top = np.argsort(-row, kind="stable")[:k]
                merged = best[j] + [(float(row[i]), page[i]) for i in top]
                best[j] = sorted(merged, key=lambda t: -t[0])[:k]
        for j, q in enumerate(short):
            out[q] = [Hit(record_item(e), score) for score, e in best[j]]
        return out
