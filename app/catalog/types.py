"""Value types and errors shared by the catalog stores and the service. No I/O."""

from __future__ import annotations

import secrets
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from app.bundle_files import printable_label
from app.catalog.names import CATALOG_NAME_RE, ITEM_ID_RE
from app.errors import Conflict, InvalidRequest, NotFound, ServiceError
from app.model_refs import MAX_NAMES_SHOWN, short_repr

Vector = npt.NDArray[np.float32]

MAX_LABEL_CHARS: Final = 256
MAX_METADATA_BYTES: Final = 16 * 1024


class CatalogNotFound(NotFound):
    slug = "catalog-not-found"
    title = "Catalog not found"


class ItemNotFound(NotFound):
    slug = "item-not-found"
    title = "Item not found"


class CatalogExists(Conflict):
    slug = "catalog-exists"
    title = "Catalog already exists"


class CatalogLimit(Conflict):
    slug = "catalog-limit"
    title = "No room for another catalog"


class DuplicateItem(Conflict):
    slug = "duplicate-item"
    title = "Item id already in use"


class CatalogChanged(Conflict):
    """Items were added, removed or replaced between reading a catalog and rebinding it."""

    slug = "catalog-changed"
    title = "Catalog changed during the operation"


def catalog_changed(name: str) -> CatalogChanged:
    return CatalogChanged(
        f"Catalog {name!r} kept changing while it was being reindexed (items added, deleted or "
        "replaced); nothing was changed. Run the reindex again, ideally while writes pause."
    )


class ModelMismatch(Conflict):
    """The catalog's vectors were made by another model (or another build of it)."""

    slug = "model-mismatch"
    title = "Catalog and model disagree"


class DimensionMismatch(InvalidRequest):
    slug = "dimension-mismatch"
    title = "Vector has the wrong dimension"


@dataclass(frozen=True)
class ModelRef:
    """The exact model build whose embedding space a catalog lives in."""

    name: str
    version: str
    sha256: str
    dim: int


@dataclass(frozen=True)
class CatalogRecord:
    name: str
    description: str
    model: ModelRef
    created_at: datetime
    item_count: int
    # Backend detail for humans (index kind, collection name ...).
    index: str = ""


@dataclass(frozen=True)
class ImageRef:
    """A stored image: content address plus what a client needs to serve it."""

    sha256: str
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class NewItem:
    id: str
    image: ImageRef
    vector: Vector  # L2-normalised, float32, length = catalog dim
    label: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemRecord:
    id: str
    image: ImageRef
    label: str | None
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ItemPage:
    items: list[ItemRecord]
    next_after: str | None  # cursor for the next page; None on the last one
    total: int


@dataclass(frozen=True)
class Hit:
    item: ItemRecord
    score: float  # inner product of unit vectors = cosine similarity


def check_item_vectors(
    name: str,
    model: str,
    dim: int,
    items: Sequence[NewItem],
    bound_sha: str = "",
    embedded_sha: str | None = None,
) -> None:
    """A store's check before adding items, in its write: the vectors were made by the build
    the catalog is bound to (`bound_sha`), when the caller says which made them
    (`embedded_sha`), else 409 (round 26: an add racing a reindex stored the old build's
    vectors in a catalog bound to the new one, and searches went wrong in silence); and each
    has the catalog's dimension `dim` (the embedding size of its `model`), else 422."""
    if embedded_sha is not None and embedded_sha != bound_sha:
        raise ModelMismatch(
            f"Catalog {name!r} was reindexed, or deleted and created again, for another build "
            f"of model {model!r} while these images were being embedded; nothing was added. "
            "Send them again."
        )
    for it in items:
        if it.vector.shape != (dim,):
            raise DimensionMismatch(
                f"Catalog {name!r} holds {dim}-d vectors of model {model!r}; "
                f"got a vector of shape {it.vector.shape}."
            )


def check_queries(name: str, model: str, dim: int, queries: Vector) -> None:
    """A store's check before a search: the query rows are N x `dim`, the catalog's
    dimension (the embedding size of its `model`); a 422 otherwise."""
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise DimensionMismatch(
            f"Catalog {name!r} holds {dim}-d vectors of model {model!r}; "
            f"the query has shape {tuple(queries.shape)}."
        )


def check_catalog_name(name: str) -> str:
    if not CATALOG_NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"Invalid catalog name {short_repr(name)}: use 1-64 lowercase letters, digits, '-' "
            "or '_', starting with a letter or digit."
        )
    return name


def no_default_catalog(model: str, own: Sequence[str]) -> InvalidRequest:
    """The 422 for predict?similar=k without catalog= on a model that has no default one: the
    catalogs of its embeddings, sorted, the first MAX_NAMES_SHOWN."""
    own = sorted(own)
    shown = ", ".join(own[:MAX_NAMES_SHOWN])
    if len(own) > MAX_NAMES_SHOWN:
        shown += f" and {len(own) - MAX_NAMES_SHOWN} more (GET /v1/catalogs lists them)"
    return InvalidRequest(
        f"Model {model!r} has no default catalog; name one with catalog=<name> "
        + (f"(its catalogs: {shown})." if own else "(it has none: create one first).")
    )


def missing_catalog(name: str, names: Sequence[str]) -> CatalogNotFound:
    """The 404 for a name no catalog has: the existing names, sorted, the first MAX_NAMES_SHOWN
    (as an unknown model's 404 lists the served models)."""
    names = sorted(names)
    shown = ", ".join(names[:MAX_NAMES_SHOWN]) or "none"
    if len(names) > MAX_NAMES_SHOWN:
        shown += f" and {len(names) - MAX_NAMES_SHOWN} more (GET /v1/catalogs lists them)"
    return CatalogNotFound(f"No catalog named {short_repr(name)}. Catalogs: {shown}.", catalog=name)


def check_item_id(item_id: str) -> str:
    if not ITEM_ID_RE.fullmatch(item_id):
        raise InvalidRequest(
            f"Invalid item id {item_id!r}: use 1-128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit."
        )
    return item_id


_ID_LOCK = threading.Lock()
_last_id = (0, 0)  # (ms, 40-bit random part) of the last id this process made


def new_item_id() -> str:
    """Time-ordered (ms, hex) + a 40-bit random part: ids sort by creation, as listings do.
    Within one process they strictly increase, so the items of one request list in upload
    order: in the same millisecond (or if the clock steps back) the previous id's random part
    is incremented instead of drawn."""
    global _last_id
    with _ID_LOCK:
        ms, rand = time.time_ns() // 1_000_000, secrets.randbits(40)
        last_ms, last_rand = _last_id
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1
            if rand >= 1 << 40:
                ms, rand = last_ms + 1, 0
        _last_id = (ms, rand)
    return f"{ms:011x}{rand:010x}"


def normal_label(label: str) -> str:
    """A label as stored and matched: trimmed, and in NFC ('é' typed and 'é' from a macOS file
    name, e + combining accent, are one label)."""
    return unicodedata.normalize("NFC", label.strip())


def check_label(label: str | None) -> str | None:
    if label is None:
        return None
    given, label = label, normal_label(label)
    if not label or len(label) > MAX_LABEL_CHARS or not printable_label(label):
        raise InvalidRequest(
            f"Invalid label {given[:40]!r}: 1-{MAX_LABEL_CHARS} printable characters "
            "(spaces at either end are trimmed)."
        )
    return label


def check_label_filter(label: str | None) -> str | None:
    """A label filter read as labels are stored: `label=shoe ` finds shoes. One empty (after
    trimming) or longer than a label may be is a 422, as on add: each answered 200 with nothing
    found, as if the label were merely unused."""
    if label is None:
        return None
    given, label = label, normal_label(label)
    if not label:
        raise InvalidRequest(
            "The label filter is empty: leave `label` out to search every label, or give one "
            f"(1-{MAX_LABEL_CHARS} printable characters)."
        )
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidRequest(
            f"Invalid label filter {given[:40]!r}... ({len(label):,} characters): labels are "
            f"1-{MAX_LABEL_CHARS} printable characters (spaces at either end are trimmed)."
        )
    return label


def unit_rows(vectors: npt.NDArray[np.floating[Any]]) -> Vector:
    """L2-normalise each row (so inner product = cosine); zero or non-finite rows are refused."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    # In float64: float32 squares overflow from about 2e19 and vanish below about 1e-23, so a
    # client's finite vector of large or tiny values read as having no direction.
    wide = v.astype(np.float64)
    if not np.all(np.isfinite(wide)):
        raise InvalidRequest(
            "An embedding vector holds a value that is not finite or beyond float32's range "
            "(about 3.4e38); it has no direction."
        )
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))[:, None]
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise InvalidRequest("An embedding vector is zero or not finite; it has no direction.")
    return np.ascontiguousarray(wide / norms, dtype=np.float32)


class StoreUnavailable(ServiceError):
    """The vector store (e.g. a Milvus server) cannot be reached or failed."""

    status = 503
    slug = "vector-store-unavailable"
    title = "Vector store unavailable"


def source_catalog_gone(model: str, name: str) -> CatalogNotFound:
    """predict?similar=k on a taught model whose source catalog was deleted: the client named
    no catalog, so say which one was looked for and why (it read "No catalog named ...")."""
    return CatalogNotFound(
        f"Model {model!r} finds similar items in {name!r}, the catalog it was taught from, "
        "which no longer exists; name another one with catalog=<name>.",
        catalog=name,
    )
