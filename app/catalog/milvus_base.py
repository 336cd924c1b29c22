"""Milvus plumbing under MilvusStore: the client, error mapping (addresses only in the log),
the catalog registry lookup, paging, settling reads and all-or-nothing inserts."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from app.catalog.types import (
    CatalogNotFound,
    ImageRef,
    ItemRecord,
    StoreUnavailable,
    missing_catalog,
)
from app.errors import ServiceError

logger = logging.getLogger(__name__)

ITEM_FIELDS = ["id", "label", "metadata", "image", "content_type", "width", "height", "created_at"]
BATCH = 1000


# gRPC's reconnect back-off: after an outage a replica's channel waited up to 2 minutes
# between tries (its default), answering 503 for 15-55 s after Milvus was back (round 43)
_RECONNECT: Final = {
    "grpc.initial_reconnect_backoff_ms": 500,
    "grpc.min_reconnect_backoff_ms": 500,
    "grpc.max_reconnect_backoff_ms": 2000,
}
PROBE_S: Final = 2.0  # how often /readyz asks a Milvus that did not answer
STALE_S: Final = 5.0  # and one this process has not heard from for this long


def milvus_uri(url: str) -> str:
    """milvus://host:port -> http://host:port; milvus+https://host:port -> https://host:port."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "milvus+https" else "http"
    if parts.scheme not in ("milvus", "milvus+https") or not parts.hostname:
        raise ValueError(f"not a Milvus URL: {url!r} (expected milvus://host:19530)")
    return f"{scheme}://{parts.hostname}:{parts.port or 19530}"


def lit(s: str) -> str:
    """A string literal for a Milvus boolean expression. Characters beyond the Basic
    Multilingual Plane stay as they are: json.dumps' surrogate-pair escapes (an emoji in a
    label) are not Milvus syntax, so every filter on such a label was a 503."""
    return json.dumps(s, ensure_ascii=False)


@contextmanager
def gone_is_missing(name: str) -> Iterator[None]:
    """A Milvus error that says the collection does not exist as the catalog's 404: a search
    racing a delete on another replica (the collection is dropped before its registry row)
    answered 503 "the store failed", with an ERROR line (round 43)."""
    from pymilvus import MilvusException
    from pymilvus.exceptions import ErrorCode

    try:
        yield
    except MilvusException as exc:
        if exc.code == ErrorCode.COLLECTION_NOT_FOUND:
            raise CatalogNotFound(
                f"Catalog {name!r} was deleted while this request read it.", catalog=name
            ) from exc
        raise


@contextmanager
def unless_gone() -> Iterator[None]:
    """Let a Milvus error that says the collection does not exist pass in silence (a
    collection dropped by a racing delete, or lost with a Milvus that lost its latest writes,
    holds no items); any other error goes on."""
    from pymilvus import MilvusException
    from pymilvus.exceptions import ErrorCode

    try:
        yield
    except MilvusException as exc:
        if exc.code != ErrorCode.COLLECTION_NOT_FOUND:
            raise


def record_item(e: dict[str, Any]) -> ItemRecord:
    meta = e.get("metadata")
    return ItemRecord(
        id=e["id"],
        label=e["label"] or None,
        metadata=meta if isinstance(meta, dict) else {},
        image=ImageRef(
            sha256=e["image"], content_type=e["content_type"], width=e["width"], height=e["height"]
        ),
        created_at=datetime.fromisoformat(e["created_at"]),
    )


def quiet_pymilvus() -> None:
    """pymilvus logs every failed call with a full traceback through a stderr handler of its
    own, past the server's log format (JSON or text): 200,000 lines while Milvus was down for
    a few minutes. `_errors` logs each failure once, in the server's format; pymilvus's own
    loggers keep only CRITICAL, through the server's handlers."""
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "pymilvus"]:
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.CRITICAL if name == "pymilvus" else logging.NOTSET)


class MilvusBase:
    """Connection and helpers; MilvusStore adds the CatalogStore methods."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        prefix: str = "imgclass_",
        hnsw_m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 128,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.uri = milvus_uri(url)
        self._token = token
        self.prefix = prefix
        self.registry = f"{prefix}catalogs"
        self._hnsw = {"M": hnsw_m, "efConstruction": ef_construction}
        self._ef = ef_search
        self._timeout = timeout_s
        self._client: Any = None
        self._lock = threading.Lock()  # create/delete of catalogs and id checks before inserts
        self._answered, self._probed, self._heard = True, 0.0, time.monotonic()

    # plumbing -----------------------------------------------------------------------------
    @contextmanager
    def _errors(self) -> Iterator[None]:
        from pymilvus import MilvusException

        try:
            yield
        except ServiceError as exc:
            if not isinstance(exc, StoreUnavailable):  # e.g. no such catalog: Milvus answered
                self._answered = True
            raise
        except MilvusException as exc:
            # The URI and Milvus's own text go to the log only, never to a client.
            logger.error("Milvus at %s failed: %s", self.uri, exc)
            self._answered = False  # or it failed: either way, asked again (`reachable`)
            raise StoreUnavailable(
                "The Milvus vector store failed; the server log says why.", retry_after_s=5
            ) from exc
        except (ConnectionError, TimeoutError) as exc:
            logger.error("Milvus at %s cannot be reached: %s", self.uri, exc)
            self._answered = False
            raise StoreUnavailable(
                "The Milvus vector store cannot be reached; the server log says why.",
                retry_after_s=5,
            ) from exc
        self._answered, self._heard = True, time.monotonic()

    def reachable(self) -> bool:
        """Whether Milvus answered the last call (a failed one counts as not). It is asked
        again in a thread of its own when it did not (at most every PROBE_S) and when this
        process has not heard from it for STALE_S, so /readyz says so during an outage and
        again once it is over, requests or none (round 43: "open" all through an outage)."""
        now = time.monotonic()
        if now - max(self._probed, self._heard) > (STALE_S if self._answered else PROBE_S):
            self._probed = now
            threading.Thread(target=self._probe, name="milvus-probe", daemon=True).start()
        return self._answered

    def _probe(self) -> None:
        # logged by _errors; the answer is the flag it sets
        with contextlib.suppress(Exception), self._errors():
            # a read, as catalogs make: after an outage Milvus answers metadata calls before
            # it can serve reads again
            self.client.query(self.registry, filter='name != ""', limit=1, timeout=PROBE_S)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StoreUnavailable("The Milvus store is not open.")
        return self._client

    def open(self) -> None:
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "IMGCLASS_VECTOR_STORE names Milvus but pymilvus is not installed; "
                "pip install 'imgclass[milvus]'"
            ) from exc
        quiet_pymilvus()
        with self._errors():
            self._client = MilvusClient(
                uri=self.uri,
                token=self._token or "",
                timeout=self._timeout,
                grpc_options=_RECONNECT,
            )
            if not self._client.has_collection(self.registry):
                schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=64)
                schema.add_field("info", DataType.VARCHAR, max_length=8192)
                # Milvus requires a vector field in every collection; this one is unused.
                schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
                idx = self._client.prepare_index_params()
                idx.add_index(field_name="v", index_type="FLAT", metric_type="L2")
                self._client.create_collection(
                    self.registry, schema=schema, index_params=idx, consistency_level="Session"
                )
            self._client.load_collection(self.registry)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing must not fail shutdown
                logger.debug("closing the Milvus client failed", exc_info=True)
            self._client = None

    def describe(self) -> str:
        return f"Milvus at {self.uri} (collections {self.prefix}*)"

    def _info(self, name: str) -> dict[str, Any]:
        where = f"name == {lit(name)}"
        with self._errors():
            rows = self.client.query(self.registry, filter=where, output_fields=["info"])
            if not rows:  # created a moment ago by another process: a Strong read sees it
                rows = self.client.query(
                    self.registry, filter=where, output_fields=["info"], consistency_level="Strong"
                )
        if not rows:
            with self._errors():
                names = self.client.query(
                    self.registry, filter='name != ""', output_fields=["name"], limit=16384
                )
            raise missing_catalog(name, [r["name"] for r in names])
        info: dict[str, Any] = json.loads(rows[0]["info"])
        return info

    def _count(self, collection: str, expr: str = 'id != ""') -> int:
        """Items matching `expr`; 0 for a collection that is gone (a registry row left by a
        Milvus that lost its latest writes must not make every listing fail)."""
        rows: list[dict[str, Any]] = []
        with self._errors(), unless_gone():
            rows = self.client.query(collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _settle(self, collection: str, expr: str) -> None:
        """Wait until a delete/upsert is visible. Milvus 2.3 returns no timestamp for them, so
        Session reads could miss them; one Strong read waits until they are applied."""
        self.client.query(
            collection, filter=expr, output_fields=["count(*)"], consistency_level="Strong"
        )

    def _pages(
        self, collection: str, fields: list[str], expr: str = ""
    ) -> Iterator[list[dict[str, Any]]]:
        after = ""
        while True:
            where = f"id > {lit(after)}" + (f" and ({expr})" if expr else "")
            batch: list[dict[str, Any]] = []
            with self._errors(), unless_gone():  # gone: nothing left to page through
                batch = self.client.query(
                    collection, filter=where, output_fields=["id", *fields], limit=BATCH
                )
            if not batch:
                return
            batch.sort(key=lambda e: e["id"])
            yield batch
            if len(batch) < BATCH:
                return
            after = batch[-1]["id"]

    def _insert_all_or_nothing(self, collection: str, rows: list[dict[str, Any]]) -> None:
        """Milvus has no multi-batch transaction: when a later batch fails, the batches already
        inserted are deleted again before the error is raised. Then one Strong read waits until
        every row is applied, so the 201 is followed by searches that see the items."""
        done: list[str] = []
        try:
            for start in range(0, len(rows), BATCH):
                chunk = rows[start : start + BATCH]
                self.client.insert(collection, chunk)
                done += [r["id"] for r in chunk]
            self._settle(collection, f"id in {json.dumps(done[:1])}")
        except BaseException:
            if done:
                try:
                    for start in range(0, len(done), BATCH):
                        ids = done[start : start + BATCH]
                        self.client.delete(collection, filter=f"id in {json.dumps(ids)}")
                    self._settle(collection, 'id != ""')
                except Exception:
                    logger.exception("rolling back a partial insert into %s failed", collection)
            raise
