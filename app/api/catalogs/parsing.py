"""Item descriptions (id, label, metadata) from an add-items request."""

from __future__ import annotations

import json
from typing import Any

from app.api.forms import BodyLimits, Form
from app.api.json_bodies import parse_json
from app.api.uploads import image_limits
from app.catalog.outcomes import ItemSpec
from app.catalog.types import MAX_METADATA_BYTES
from app.errors import InvalidRequest
from app.settings import Settings

# A text part (an `items` array for a full batch) may hold this much.
MAX_FORM_PART = 1024 * 1024


def items_limits(settings: Settings) -> BodyLimits:
    """Add-items: the image limits plus room for id/label/metadata per file."""
    n = settings.max_batch_images
    return image_limits(settings, text_bytes=MAX_FORM_PART, fields=3 * n + 8)


def metadata_bytes(meta: dict[str, Any]) -> int:
    """Metadata's size as one measure for every way it arrives: compact JSON in UTF-8 (a
    text field's own spacing and escapes, or json.dumps' \\u escapes, which count an emoji
    as 12 bytes, made the same metadata pass one form and fail the other)."""
    return len(json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode())


def _check_size(meta: dict[str, Any], where: str) -> dict[str, Any]:
    if metadata_bytes(meta) > MAX_METADATA_BYTES:
        raise InvalidRequest(
            f"{where} is larger than {MAX_METADATA_BYTES:,} bytes (as compact UTF-8 JSON)."
        )
    return meta


def parse_metadata(text: str | None, where: str = "metadata") -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    # Text this long cannot hold metadata under the limit (escapes take at most 6 bytes for
    # a character's 1 to 4): refused before it is parsed.
    if len(text.encode()) > 6 * MAX_METADATA_BYTES:
        raise InvalidRequest(f"{where} is larger than {MAX_METADATA_BYTES:,} bytes.")
    value = parse_json(text, where)
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object, not {type(value).__name__}.")
    return _check_size(value, where)


def _spec_from_json(obj: Any, i: int) -> ItemSpec:
    where = f"items[{i}]"
    if not isinstance(obj, dict) or set(obj) - {"id", "label", "metadata"}:
        raise InvalidRequest(f"{where} must be an object with only id, label and metadata.")
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidRequest(f"{where}.metadata must be a JSON object.")
    for key in ("id", "label"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise InvalidRequest(f"{where}.{key} must be a string.")
    if meta is not None:
        _check_size(meta, f"{where}.metadata")
    return ItemSpec(id=obj.get("id"), label=obj.get("label"), metadata=meta or {})


def _per_file(values: list[str], n: int, field: str, shareable: bool) -> list[str | None]:
    if not values:
        return [None] * n
    out: list[str | None] = [*values]
    if len(values) == n:
        return out
    if len(values) == 1 and shareable:
        return out * n
    raise InvalidRequest(
        f"{len(values)} '{field}' fields for {n} files: give one per file, in order"
        + (" (or one for all)." if shareable else ".")
    )


def query_spec(query: dict[str, str | None]) -> ItemSpec:
    """A raw-body upload describes its one item in query parameters."""
    return ItemSpec(
        id=query["id"], label=query["label"], metadata=parse_metadata(query["metadata"])
    )


# The text fields of a multipart items upload, beside its `file` parts.
ITEM_FIELDS = ("id", "label", "metadata", "items")


def form_specs(form: Form, n: int) -> list[ItemSpec]:
    """Per-file id/label/metadata from the multipart text fields."""
    for key in ITEM_FIELDS:
        if form.file_parts(key):
            raise InvalidRequest(f"The '{key}' part must be a text field, not a file.")
    texts = {key: form.texts(key) for key in ITEM_FIELDS}
    if texts["items"]:
        if any(texts[k] for k in ("id", "label", "metadata")) or len(texts["items"]) > 1:
            raise InvalidRequest("Give either one 'items' JSON array or id/label/metadata fields.")
        arr = parse_json(texts["items"][0], "'items'")
        if not isinstance(arr, list) or len(arr) != n:
            raise InvalidRequest(f"'items' must be a JSON array with one object per file ({n}).")
        return [_spec_from_json(obj, i) for i, obj in enumerate(arr)]
    ids = _per_file(texts["id"], n, "id", shareable=False)
    labels = _per_file(texts["label"], n, "label", shareable=True)
    metas = _per_file(texts["metadata"], n, "metadata", shareable=True)
    return [
        ItemSpec(
            id=ids[i],
            label=labels[i],
            metadata=parse_metadata(metas[i], f"metadata of file {i + 1}" if n > 1 else "metadata"),
        )
        for i in range(n)
    ]
