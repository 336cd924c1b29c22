"""CatalogService: catalogs bound to a model's embedding space, on top of a CatalogStore.

It embeds images with the served model, writes images before the store commits, refuses to
mix embedding spaces (model sha check) and removes images no item references any more. How a
model embeds: app.catalog.embedding; re-embedding for a new build: app.catalog.reindex."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.catalog.backends import connect, open_store
from app.catalog.blobs import BlobStore
from app.catalog.dedup import find_duplicates
from app.catalog.embedding import Marked, Seen, embed_images, model_ref
from app.catalog.outcomes import AddOutcome, ItemCheck, ItemSpec, SearchOutcome
from app.catalog.reindex import reindex_catalog
from app.catalog.reserve import SpaceReserve
from app.catalog.store import CatalogStore
from app.catalog.types import (
    CatalogLimit,
    CatalogNotFound,
    CatalogRecord,
    DimensionMismatch,
    ImageRef,
    ItemPage,
    ItemRecord,
    ModelMismatch,
    NewItem,
    StoreUnavailable,
    Vector,
    check_catalog_name,
    check_item_id,
    check_label,
    check_label_filter,
    new_item_id,
    no_default_catalog,
    source_catalog_gone,
    unit_rows,
)
from app.errors import InvalidRequest, NotReady, ServiceError
from app.fsutil import check_folder, file_lock
from app.ingest import DecodedThumbnails, limits_from
from app.registry import LoadedModel, ModelRegistry
from app.settings import Settings

logger = logging.getLogger(__name__)


class CatalogService:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        store: CatalogStore | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store or open_store(settings)
        root = settings.data_dir / "catalogs"
        self.blobs = blobs or BlobStore(root, settings.thumbnail_px)
        self._lock_path = root / ".blobs.lock"
        self._blob_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._opened = False
        self.started = threading.Event()
        self.limits = limits_from(settings)
        self.reserve = SpaceReserve(root)

    # lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        """Connect the store and collect orphan images; a failure is logged and retried on the
        next request (503 until). Sets `started` once run: /readyz waits for it."""
        try:
            self._ensure_open(wait=True)
            self.collect_orphans()
        except StoreUnavailable:
            pass  # logged by _ensure_open
        except Exception as exc:  # start-up must not fail over housekeeping
            logger.error("collecting orphan images failed: %s", exc)
        self.reserve.ensure()  # never raises
        self.started.set()

    @property
    def opened(self) -> bool:
        return self._opened

    def collect_orphans(self) -> int:
        """Remove stored images no item references (a crash between the image write and the
        store's commit), under the blob guard: an add in flight elsewhere holds it."""
        store = self._ensure_open()
        with self._blob_guard():
            stored = list(self.blobs.stored_digests())
            orphans = set(stored) - store.images_in_use(stored)  # in bulk (Milvus: was 6 min)
            for sha in orphans:
                self.blobs.remove(sha)
            self.blobs.remove_partial_writes()
        if orphans:
            logger.warning("removed %d orphan image(s) left by an interrupted add", len(orphans))
        return len(orphans)

    def _ensure_open(self, wait: bool = False) -> CatalogStore:
        """The opened store. A request that finds another thread opening it gets a 503 at once:
        waiting took a request 28 s behind a Milvus just restarted (round 30)."""
        check_folder(self.settings.data_dir)  # 503 when the data folder was moved or replaced
        if self._opened:
            return self.store
        if not self._open_lock.acquire(blocking=wait):
            raise NotReady("The catalog store is still opening; retry shortly.", retry_after_s=2)
        try:
            if not self._opened:
                connect(self.store)
                self._opened = True
                logger.info("catalog store: %s", self.store.describe())
        finally:
            self._open_lock.release()
        return self.store

    def warm(self) -> None:
        """Load the embedded indexes now rather than on each catalog's first search."""
        try:
            store = self._ensure_open()
            if callable(warm := getattr(store, "warm", None)):
                warm()
        except Exception as exc:  # a start-up thread: report, the first request retries
            logger.error("loading the catalog indexes failed: %s", exc)

    def close(self) -> None:
        if self._opened:
            self.store.close()
            self._opened = False

    @contextmanager
    def _blob_guard(self) -> Iterator[None]:
        """Serialise 'write image + commit' against 'delete + remove unreferenced image', also
        across processes sharing the data folder (uvicorn workers, the build script)."""
        with self._blob_lock, file_lock(self._lock_path):
            yield

    # models -------------------------------------------------------------------------------
    def bound_model(self, catalog: CatalogRecord) -> LoadedModel:
        """The served model a catalog was built with; 409 if the served bundle changed."""
        loaded = self.registry.get(catalog.model.name)
        served = model_ref(loaded)
        bound = catalog.model
        if served.sha256 != bound.sha256 or served.dim != bound.dim:
            raise ModelMismatch(
                f"Catalog {catalog.name!r} was built with model {bound.name!r} v{bound.version} "
                f"(sha256 {bound.sha256[:12]}...), but the server now serves v{served.version} "
                f"(sha256 {served.sha256[:12]}...): their embeddings are not comparable; "
                "reindex the catalog (re-embeds the stored images) or rebuild it.",
                catalog_model_sha256=bound.sha256,
                served_model_sha256=served.sha256,
            )
        return loaded

    def default_catalog(self, model: str, strict: bool = False) -> str | None:
        """The model's default catalog, if it exists and fits the model; `strict` (for
        predict?similar=k): a store opening or unavailable is its 503, not "none" (round 31)."""
        name = self.settings.default_catalogs.get(model)
        if name is None:
            return None
        try:
            rec = self._ensure_open().get_catalog(name)
        except ServiceError as exc:
            if strict and not isinstance(exc, CatalogNotFound):
                raise
            return None
        return name if rec.model.name == model else None

    def embed(self, loaded: LoadedModel, images: Sequence[bytes], seen: Seen = None) -> Vector:
        """Unit embedding rows of `images` (`seen`: prepare_batch's on_decoded). 413/415/422."""
        return self.embeds(loaded, images, seen)[0]

    def embeds(self, loaded: LoadedModel, images: Sequence[bytes], seen: Seen = None) -> Marked:
        return embed_images(loaded, images, self.limits, seen)  # `embed`, and which are blank

    # catalogs -----------------------------------------------------------------------------
    def create(self, name: str, model: str, description: str = "") -> CatalogRecord:
        """Create a catalog; 409 beyond `max_catalogs` (counted under the write guard, which
        every process sharing the data folder takes, so concurrent creates cannot pass it)."""
        check_catalog_name(name)
        ref = model_ref(self.registry.get(model))
        store = self._ensure_open()
        limit = self.settings.max_catalogs
        with self._blob_guard():
            count = store.count_catalogs()
            if count >= limit:
                raise CatalogLimit(
                    f"There are already {count:,} catalogs; this server keeps at most "
                    f"{limit:,} (IMGCLASS_MAX_CATALOGS), since every listing returns them all. "
                    "Delete one you no longer need, or add items to an existing catalog.",
                    limit_catalogs=limit,
                )
            return store.create_catalog(name, ref, description)

    def get(self, name: str) -> CatalogRecord:
        return self._ensure_open().get_catalog(name)

    def list_catalogs(self) -> list[CatalogRecord]:
        return self._ensure_open().list_catalogs()

    def delete(self, name: str) -> None:
        store = self._ensure_open()

        def work() -> None:
            with self._blob_guard():
                self._collect(store.delete_catalog(name))

        self.reserve.freeing(work)

    def _collect(self, shas: set[str]) -> None:
        """Remove images nothing references any more (caller holds the blob guard)."""
        for sha in shas:
            if not self.store.image_in_use(sha):
                self.blobs.remove(sha)

    def reindex(self, name: str, force: bool = False) -> tuple[CatalogRecord, int]:
        """Re-embed every stored image with the model now served under the catalog's model
        name, then rebind in one step, catching up with writes made meanwhile; the last round
        holds the write guard. A no-op when the catalog is bound to that model already, unless
        `force`; 409 while this process reindexes it (app.catalog.reindex)."""
        store = self._ensure_open()
        catalog = store.get_catalog(name)
        loaded = self.registry.get(catalog.model.name)
        guard = self._blob_guard
        return reindex_catalog(
            store, self.blobs, catalog, loaded, embed=self.embed, write_guard=guard, force=force
        )

    # items --------------------------------------------------------------------------------
    def add(
        self, name: str, images: Sequence[bytes], specs: Sequence[ItemSpec]
    ) -> list[ItemRecord]:
        """Embed, store images durably, then commit the items (all or nothing)."""
        return self.add_checked(name, images, specs).records

    def add_checked(
        self,
        name: str,
        images: Sequence[bytes],
        specs: Sequence[ItemSpec],
        *,
        skip_duplicates: bool = False,
    ) -> AddOutcome:
        """`add`; with `skip_duplicates`, an image copying an item of the same label (stored, or
        earlier in `images`) is reported, not added (app.catalog.dedup), checked under the write
        guard: a re-sent upload racing the original cannot slip a copy in between."""
        if len(images) != len(specs):
            raise InvalidRequest(f"{len(images)} images but {len(specs)} item descriptions.")
        store = self._ensure_open()
        loaded = self.bound_model(store.get_catalog(name))
        ids = [check_item_id(s.id) if s.id is not None else new_item_id() for s in specs]
        labels = [check_label(s.label) for s in specs]
        made = DecodedThumbnails(len(images), self.settings.thumbnail_px)
        vectors, blank = self.embeds(loaded, images, made.keep)  # thumbnails from its decode
        thumbs = made.finish(images, self.limits)
        pending = [self.blobs.pending(data, t) for data, t in zip(images, thumbs, strict=True)]
        with self._blob_guard():
            copies = find_duplicates(store, name, vectors, labels, ids) if skip_duplicates else {}
            keep = [i for i in range(len(specs)) if i not in copies]
            if not keep:
                return AddOutcome([], list(copies.values()), blank)
            refs: list[ImageRef] = self.blobs.write([pending[i] for i in keep])
            items = [
                NewItem(
                    id=ids[i],
                    image=ref,
                    vector=vectors[i],
                    label=labels[i],
                    metadata=specs[i].metadata,
                )
                for i, ref in zip(keep, refs, strict=True)
            ]
            try:
                added = store.add_items(name, items, model_ref(loaded).sha256)
                return AddOutcome(added, list(copies.values()), blank)
            except BaseException:
                self._collect({r.sha256 for r in refs})
                raise

    def get_item(self, name: str, item_id: str) -> ItemRecord:
        return self._ensure_open().get_item(name, item_id)

    def list_items(
        self, name: str, *, after: str | None, limit: int, label: str | None
    ) -> ItemPage:
        store = self._ensure_open()
        return store.list_items(name, after=after, limit=limit, label=check_label_filter(label))

    def delete_item(self, name: str, item_id: str, check: ItemCheck | None = None) -> ItemRecord:
        """`check` (raises to refuse) sees the item under the write guard adds take too."""
        store = self._ensure_open()

        def work() -> ItemRecord:
            with self._blob_guard():
                if check is not None:
                    check(store.get_item(name, item_id))
                record = store.delete_item(name, item_id)
                self._collect({record.image.sha256})
            return record

        return self.reserve.freeing(work)

    def item_file(self, name: str, item_id: str, thumbnail: bool) -> tuple[Path, str, ItemRecord]:
        item = self.get_item(name, item_id)
        sha = item.image.sha256
        if thumbnail:
            return self.blobs.thumbnail_path(sha), "image/jpeg", item
        return self.blobs.image_path(sha), item.image.content_type, item

    # search -------------------------------------------------------------------------------
    def search_images(
        self, name: str, images: Sequence[bytes], k: int, label: str | None
    ) -> SearchOutcome:
        catalog = self.get(name)
        loaded = self.bound_model(catalog)
        t0 = time.perf_counter()
        vectors = self.embed(loaded, images)
        embed_ms = (time.perf_counter() - t0) * 1e3
        return self._search(catalog, vectors, k, label, (), embed_ms)

    def search_item(self, name: str, item_id: str, k: int, label: str | None) -> SearchOutcome:
        catalog = self.get(name)
        self.bound_model(catalog)
        vector = self.store.get_vector(name, item_id)
        return self._search(catalog, vector[None, :], k, label, (item_id,), 0.0)

    def search_vector(
        self, name: str, vector: Sequence[float], k: int, label: str | None
    ) -> SearchOutcome:
        catalog = self.get(name)
        self.bound_model(catalog)
        with np.errstate(over="ignore"):  # beyond float32: inf, which unit_rows refuses
            v = np.asarray(vector, dtype=np.float32)
        if v.shape != (catalog.model.dim,):
            raise DimensionMismatch(
                f"Catalog {name!r} holds {catalog.model.dim}-d embeddings of model "
                f"{catalog.model.name!r}; the vector given has shape {v.shape}.",
                expected_dim=catalog.model.dim,
            )
        return self._search(catalog, unit_rows(v), k, label, (), 0.0)

    def similar_catalog(self, loaded: LoadedModel, catalog: str | None) -> CatalogRecord:
        """The catalog predict?similar=k would search for `loaded` (named, the model's default,
        or a taught model's source catalog), checked before any image is decoded: 422 for a
        model without embeddings, 404 when it does not exist, 409 for another model's."""
        ref = model_ref(loaded)
        backbone = loaded.model.bundle.metadata.backbone  # a taught model: its source catalog
        name = catalog or self.default_catalog(loaded.name, strict=True)
        name = name or (backbone.catalog if backbone else None)
        if name is None:
            own = [c.name for c in self.list_catalogs() if c.model.name == ref.name]
            raise no_default_catalog(loaded.name, own)
        try:
            record = self.get(name)
        except CatalogNotFound:
            if catalog is None and backbone is not None and name == backbone.catalog:
                raise source_catalog_gone(loaded.name, name) from None
            raise
        if record.model.name != ref.name:
            raise ModelMismatch(
                f"Catalog {name!r} holds embeddings of model {record.model.name!r}, not "
                f"{loaded.name!r}; ask model {record.model.name!r} instead.",
                catalog_model=record.model.name,
            )
        return record

    def similar(
        self, loaded: LoadedModel, record: CatalogRecord, embeddings: Vector | None, k: int
    ) -> SearchOutcome:
        """Neighbours for predict?similar=k in the catalog `similar_catalog` found before the
        images were decoded: `embeddings` come from predict's forward pass."""
        if embeddings is None:
            raise InvalidRequest(f"Model {loaded.name!r} returned no embedding.")
        bound = self.bound_model(record)
        if model_ref(bound).sha256 != model_ref(loaded).sha256:
            raise ModelMismatch(f"Model {loaded.name!r} was reloaded during the request; retry.")
        return self._search(record, unit_rows(embeddings), k, None, (), 0.0)

    def _search(
        self,
        catalog: CatalogRecord,
        vectors: Vector,
        k: int,
        label: str | None,
        exclude: Sequence[str],
        embed_ms: float,
    ) -> SearchOutcome:
        t0 = time.perf_counter()
        label = check_label_filter(label)
        hits = self.store.search(catalog.name, vectors, k, label=label, exclude=exclude)
        return SearchOutcome(catalog, hits, embed_ms, (time.perf_counter() - t0) * 1e3)
