"""Reindexing a catalog: re-embed its stored images with the model now served under the
catalog's model name and rebind the catalog to it in one step, catching up with the writes
made meanwhile. app.catalog.service hands it the store, the images, its `embed` and its write
guard."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

from app.catalog.blobs import BlobStore
from app.catalog.embedding import model_ref
from app.catalog.store import CatalogStore
from app.catalog.types import CatalogChanged, CatalogRecord, ItemNotFound, Vector
from app.errors import Conflict
from app.loaded import LoadedModel

logger = logging.getLogger(__name__)
REINDEX_ROUNDS = 3  # reindex: rebind attempts; the last one holds the write guard

Embed = Callable[[LoadedModel, Sequence[bytes]], Vector]


_running: set[str] = set()  # catalogs being reindexed by this process
_running_lock = threading.Lock()


@contextlib.contextmanager
def _alone(name: str) -> Iterator[None]:
    """One reindex of a catalog at a time in this process: six at once did the same work six
    times (152 CPU-seconds for one catalog of 20,000 items)."""
    with _running_lock:
        if name in _running:
            raise Conflict(
                f"Catalog {name!r} is being reindexed already; its answer will say when it is "
                "done (GET the catalog: `stale` turns false)."
            )
        _running.add(name)
    try:
        yield
    finally:
        with _running_lock:
            _running.discard(name)


def reindex_catalog(
    store: CatalogStore,
    blobs: BlobStore,
    current: CatalogRecord,
    loaded: LoadedModel,
    *,
    embed: Embed,
    write_guard: Callable[[], AbstractContextManager[None]],
    force: bool = False,
) -> tuple[CatalogRecord, int]:
    """Re-embed every stored image of catalog `current` with `loaded`, then rebind in one
    step; (the catalog, the items re-embedded). A catalog bound to `loaded` already is returned
    as it is (0 items) unless `force`. Writes may continue meanwhile: when the catalog changed
    (items added, deleted or replaced), only the images not yet embedded are embedded and the
    rebind is tried again. The last of REINDEX_ROUNDS rounds holds the write guard, so adds and
    deletes (every process) wait for that one short round - the images added since the round
    before, and the rebind - and the reindex finishes however busy the writers."""
    ref = model_ref(loaded)
    name = current.name
    if not force and current.model.sha256 == ref.sha256 and current.model.dim == ref.dim:
        return current, 0
    with _alone(name):
        by_image: dict[str, Vector] = {}  # sha256 -> vector, kept across rounds
        for round_ in range(1, REINDEX_ROUNDS + 1):
            last = round_ == REINDEX_ROUNDS
            with write_guard() if last else contextlib.nullcontext():
                images = _embed_missing(store, blobs, name, loaded, by_image, embed)
                try:
                    record = store.rebind_catalog(
                        name, ref, {i: by_image[sha] for i, sha in images.items()}, images
                    )
                except CatalogChanged:
                    if last:  # changed under the write guard: not by this service's writers
                        raise
                    logger.info("catalog %s changed during reindex round %d", name, round_)
                    continue
            logger.info(
                "catalog %s reindexed with %s sha256=%s in %d round(s)",
                name,
                ref.name,
                ref.sha256[:12],
                round_,
            )
            return record, len(images)
    raise AssertionError("unreachable")


def _embed_missing(
    store: CatalogStore,
    blobs: BlobStore,
    name: str,
    loaded: LoadedModel,
    by_image: dict[str, Vector],
    embed: Embed,
) -> dict[str, str]:
    """The catalog's items now (id -> image sha256); embeds the images `by_image` lacks.
    An item whose image vanished meanwhile (deleted, image collected) is left out: the
    rebind then sees the catalog changed."""
    images: dict[str, str] = {}
    for batch in store.iter_items(name, batch=256):
        todo: dict[str, bytes] = {}
        for it in batch:
            sha = it.image.sha256
            if sha not in by_image and sha not in todo:
                try:
                    todo[sha] = _intact(blobs.image_path(sha).read_bytes(), sha, name, it.id)
                except FileNotFoundError:
                    if _still_stored(store, name, it.id, sha):
                        raise Conflict(
                            f"Cannot reindex catalog {name!r}: the image file of item "
                            f"{it.id!r} is missing from the data folder. Restore the data "
                            "folder, or delete that item, then reindex."
                        ) from None
                    continue  # deleted meanwhile (its image collected)
            images[it.id] = sha
        if todo:
            embedded = embed(loaded, list(todo.values()))
            by_image.update(zip(todo, embedded, strict=True))
    return images


def _intact(data: bytes, sha: str, name: str, item_id: str) -> bytes:
    """The stored image's bytes if they still match their digest; a file damaged on disk is a
    409 naming its item (it was a 422 about "image 1" of the whole catalog)."""
    if hashlib.sha256(data).hexdigest() != sha:
        raise Conflict(
            f"Cannot reindex catalog {name!r}: the image file of item {item_id!r} is damaged in "
            "the data folder (its bytes no longer match their sha256). Upload that image again "
            "(which rewrites the file), restore the data folder, or delete the item, then "
            "reindex."
        )
    return data


def _still_stored(store: CatalogStore, name: str, item_id: str, sha: str) -> bool:
    """Whether the item still holds that image (its file missing: a damaged data folder,
    not a delete racing the reindex, which removes the item before its image)."""
    try:
        return store.get_item(name, item_id).image.sha256 == sha
    except ItemNotFound:
        return False
