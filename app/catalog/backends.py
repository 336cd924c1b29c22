"""The catalog backend named by IMGCLASS_VECTOR_STORE (embedded SQLite + faiss, or Milvus)."""

from __future__ import annotations

import logging

from app.catalog.index import IndexConfig
from app.catalog.store import CatalogStore
from app.catalog.types import StoreUnavailable
from app.errors import ConfigurationError, ServiceError
from app.settings import Settings

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> CatalogStore:
    """The backend named by IMGCLASS_VECTOR_STORE."""
    url = settings.vector_store.strip()
    if url in ("", "embedded"):
        from app.catalog.embedded import EmbeddedStore

        cfg = IndexConfig(
            kind=settings.index_kind,
            hnsw_threshold=settings.hnsw_threshold,
            hnsw_m=settings.hnsw_m,
            ef_search=settings.hnsw_ef_search,
        )
        return EmbeddedStore(settings.data_dir / "catalogs", cfg)
    if url.startswith(("milvus://", "milvus+https://")):
        from app.catalog.milvus import MilvusStore

        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        return MilvusStore(url, token=token, prefix=settings.milvus_prefix)
    raise ConfigurationError(
        f"IMGCLASS_VECTOR_STORE={url!r}: use 'embedded' or 'milvus://host:19530'."
    )


def connect(store: CatalogStore) -> None:
    """store.open(), any failure but our own errors a 503 whose cause (where the store lives:
    a Milvus URI, a path) goes to the log only."""
    try:
        store.open()
    except ServiceError:
        raise
    except Exception as exc:
        logger.error("the vector store (%s) cannot be opened: %s", store.describe(), exc)
        raise StoreUnavailable(
            f"The {store.kind} vector store cannot be opened; the server log says why."
        ) from exc
