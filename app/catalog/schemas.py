"""Pydantic request/response shapes of the catalog (visual similarity) API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from app.catalog.types import CatalogRecord, Hit, ItemRecord

MAX_K = 100


class CatalogCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="1-64 lowercase letters, digits, '-' or '_'",
        examples=["shoes"],
    )
    model: str = Field(description="served model whose embedding space the catalog uses")
    description: str = Field(default="", max_length=2000)


class ModelBinding(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="sha256 of the model.onnx the catalog's vectors came from")
    embedding_dim: int


class CatalogInfo(BaseModel):
    name: str
    description: str
    model: ModelBinding
    created_at: datetime
    item_count: int
    index: str = Field(description="how the vectors are indexed (backend detail)")
    stale: bool | None = Field(
        description="true when the served model is not the build the catalog was made with "
        "(searches answer 409 until POST .../reindex); null when the model is not served"
    )


class CatalogList(BaseModel):
    catalogs: list[CatalogInfo]
    store: str = Field(description="the vector store backend: embedded or milvus")


class StoredImage(BaseModel):
    sha256: str
    content_type: str
    width: int
    height: int


class Item(BaseModel):
    id: str
    label: str | None
    metadata: dict[str, Any]
    image: StoredImage
    created_at: datetime
    image_url: str
    thumbnail_url: str


class ItemList(BaseModel):
    items: list[Item]
    total: int = Field(description="items in the catalog (with the label, when filtered)")
    next_after: str | None = Field(description="pass as ?after= for the next page; null at the end")


class ItemsCreated(BaseModel):
    catalog: str
    ids: list[str]
    items: list[Item]


class SearchRequest(BaseModel):
    """JSON body of a search by stored item or by a vector from the same model."""

    model_config = ConfigDict(extra="forbid")

    item_id: str | None = Field(default=None, description="search with this item's vector")
    vector: list[float] | None = Field(
        default=None, description="an embedding of the catalog's model (normalised here)"
    )
    k: int | None = Field(default=None, ge=1, le=MAX_K)
    label: str | None = Field(default=None, description="only neighbours with this label")


class Neighbor(BaseModel):
    id: str
    score: float = Field(description="cosine similarity of the L2-normalised embeddings")
    label: str | None
    metadata: dict[str, Any]
    thumbnail_url: str
    image_url: str


class SearchTimings(BaseModel):
    embed_ms: float = Field(description="decode + forward pass of the query image (0 otherwise)")
    search_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    catalog: str
    model: str
    k: int
    label: str | None
    query_item_id: str | None = Field(description="the item searched with; never a neighbour")
    neighbors: list[Neighbor]
    timings: SearchTimings


class ReindexResult(BaseModel):
    catalog: CatalogInfo
    items: int
    seconds: float


# shaping ------------------------------------------------------------------------------------
def _item_url(catalog: str, item_id: str, what: str) -> str:
    return f"/v1/catalogs/{quote(catalog)}/items/{quote(item_id, safe='')}/{what}"


def item_view(catalog: str, it: ItemRecord) -> Item:
    return Item(
        id=it.id,
        label=it.label,
        metadata=it.metadata,
        image=StoredImage(
            sha256=it.image.sha256,
            content_type=it.image.content_type,
            width=it.image.width,
            height=it.image.height,
        ),
        created_at=it.created_at,
        image_url=_item_url(catalog, it.id, "image"),
        thumbnail_url=_item_url(catalog, it.id, "thumbnail"),
    )


def neighbor_view(catalog: str, hit: Hit) -> Neighbor:
    it = hit.item
    return Neighbor(
        id=it.id,
        score=round(hit.score, 6),
        label=it.label,
        metadata=it.metadata,
        thumbnail_url=_item_url(catalog, it.id, "thumbnail"),
        image_url=_item_url(catalog, it.id, "image"),
    )


def catalog_shape(rec: CatalogRecord, served_sha256: str | None) -> CatalogInfo:
    """`served_sha256`: the build of the catalog's model now served (None: not served)."""
    stale = None if served_sha256 is None else served_sha256 != rec.model.sha256
    m = rec.model
    return CatalogInfo(
        name=rec.name,
        description=rec.description,
        model=ModelBinding(name=m.name, version=m.version, sha256=m.sha256, embedding_dim=m.dim),
        created_at=rec.created_at,
        item_count=rec.item_count,
        index=rec.index,
        stale=stale,
    )
