"""CatalogStore: the one interface every backend implements (embedded SQLite + in-memory index, Milvus).

A store keeps catalogs, their items (metadata + unit vectors) and answers k-NN searches.
Images live beside it in a BlobStore; the service writes them before calling `add_items`.
Every backend must pass tests/app/catalog/test_store_contract.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence

from app.catalog.types import CatalogRecord, Hit, ItemPage, ItemRecord, ModelRef, NewItem, Vector


class CatalogStore(ABC):
    """Thread-safe; methods raise CatalogNotFound/ItemNotFound/CatalogExists/DuplicateItem/
    DimensionMismatch (ServiceErrors) for the client's mistakes."""

    kind: str = "abstract"

    @abstractmethod
    def open(self) -> None:
        """Connect / load; called once before use (may take seconds for big catalogs)."""

    @abstractmethod
    def close(self) -> None:
        """Release resources; the store may not be used afterwards."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs: backend and where its data lives."""

    def reachable(self) -> bool:
        """Whether the store answered when last looked at (for /readyz: a few system calls,
        no waiting); a store in this process's own files always does."""
        return True

    # catalogs
    @abstractmethod
    def create_catalog(self, name: str, model: ModelRef, description: str = "") -> CatalogRecord:
        """New empty catalog bound to `model`'s embedding space."""

    @abstractmethod
    def get_catalog(self, name: str) -> CatalogRecord: ...

    @abstractmethod
    def list_catalogs(self) -> list[CatalogRecord]: ...

    def count_catalogs(self) -> int:
        """How many catalogs exist (backends with a cheaper count override this)."""
        return len(self.list_catalogs())

    @abstractmethod
    def delete_catalog(self, name: str) -> set[str]:
        """Remove the catalog and all its items; returns the image digests it referenced."""

    @abstractmethod
    def rebind_catalog(
        self,
        name: str,
        model: ModelRef,
        vectors: dict[str, Vector],
        images: Mapping[str, str] | None = None,
    ) -> CatalogRecord:
        """Replace every item's vector and the model binding (reindex), in one step. `vectors`
        must name exactly the catalog's items, and each item's image must still be the one of
        `images` (id -> sha256, when given); else CatalogChanged and nothing changes."""

    # items
    @abstractmethod
    def add_items(
        self, name: str, items: Sequence[NewItem], embedded_sha: str | None = None
    ) -> list[ItemRecord]:
        """All or nothing; durable when it returns. Duplicate ids -> DuplicateItem; vectors
        made by another build (`embedded_sha`) than the catalog's now -> ModelMismatch."""

    @abstractmethod
    def get_item(self, name: str, item_id: str) -> ItemRecord: ...

    @abstractmethod
    def get_vector(self, name: str, item_id: str) -> Vector: ...

    @abstractmethod
    def list_items(
        self, name: str, *, after: str | None = None, limit: int = 50, label: str | None = None
    ) -> ItemPage:
        """Items in id order, `limit` at a time, starting after the id `after`."""

    def iter_items(self, name: str, batch: int = 1000) -> Iterator[list[ItemRecord]]:
        """Every item of a catalog, in id order, in batches."""
        after: str | None = None
        while True:
            page = self.list_items(name, after=after, limit=batch)
            if page.items:
                yield page.items
            if page.next_after is None:
                return
            after = page.next_after

    @abstractmethod
    def delete_item(self, name: str, item_id: str) -> ItemRecord:
        """Remove one item for good; returns what was removed."""

    @abstractmethod
    def image_in_use(self, sha256: str) -> bool:
        """Whether any item of any catalog still references this image."""

    def images_in_use(self, digests: Sequence[str]) -> set[str]:
        """The digests among `digests` that some item references (a store where one lookup
        costs a round trip answers many at once: start-up checks every stored image)."""
        return {d for d in digests if self.image_in_use(d)}

    # search
    @abstractmethod
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
        """For each unit query row, the k most similar items (highest inner product first),
        only those with `label` when given, never the ids in `exclude`. Exactly k results
        whenever that many items match. `fresh`: the search sees every write answered before
        it, by any process or replica (the duplicate check, app/catalog/dedup.py); a store
        that always does (the embedded one re-syncs each call) ignores it."""
