"""Visual similarity: named catalogs of images searched by a model's CNN embeddings.

`CatalogService` (service.py) is what the API uses; it stores through a `CatalogStore`
(store.py): SQLite + an in-memory index on one machine (embedded.py) or Milvus (milvus.py).
"""
