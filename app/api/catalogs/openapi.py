"""OpenAPI text of the catalog routes whose bodies are read by hand (app/api/forms.py)."""

from __future__ import annotations

from typing import Any

from app.api.uploads import IMAGE_BODY_OPENAPI
from app.imaging import ACCEPTED_TEXT
from app.schemas import CatalogCreate, SearchRequest

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key"},
    404: {"description": "unknown catalog, item or model"},
    409: {"description": "the served model is not the build the catalog was made with"},
    422: {"description": "invalid parameters"},
    503: {
        "description": "model still loading, vector store unavailable or server busy (Retry-After)"
    },
}

CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON, at most IMGCLASS_MAX_JSON_BYTES (256 KiB) and 32 levels deep.",
        "content": {"application/json": {"schema": CatalogCreate.model_json_schema()}},
    }
}

ITEMS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "multipart/form-data with one or more `file` parts, each one item, and optionally per "
            "item: `id` (client-chosen, unique in the catalog; else generated), `label`, and "
            "`metadata` (a JSON object as a string). Give each field once per file (in order) - "
            "`label`/`metadata` given once apply to every file - or instead one `items` field: a "
            "JSON array of {id, label, metadata} objects, one per file. A single image may also "
            "be sent as the raw body with ?id=&label=&metadata=, and images as JSON "
            '{"images": [{"b64": ...} | {"url": ...}]} with ?label=&metadata= for all. '
            f"Accepted: {ACCEPTED_TEXT}. "
            "Limits: IMGCLASS_MAX_BATCH_IMAGES files of IMGCLASS_MAX_IMAGE_BYTES each, "
            "IMGCLASS_MAX_REQUEST_BYTES in all, text fields up to 1 MiB."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                        },
                        "id": {"type": "array", "items": {"type": "string"}},
                        "label": {"type": "array", "items": {"type": "string"}},
                        "metadata": {"type": "array", "items": {"type": "string"}},
                        "items": {"type": "string", "description": "JSON array, one per file"},
                    },
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": IMAGE_BODY_OPENAPI["requestBody"]["content"]["application/json"],
        },
    }
}

SEARCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": (
            "The query: an image (multipart `file` part or the raw body), or JSON "
            '{"item_id": ...} / {"vector": [...]} with optional "k" and "label" (at most '
            "IMGCLASS_MAX_JSON_BYTES), or no body and ?item_id=. The query item itself is never "
            "returned."
        ),
        "content": {
            "application/json": {"schema": SearchRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
