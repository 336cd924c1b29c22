"""What the catalog service takes and answers beyond the store's records: a client's
description of one uploaded image, the outcome of an add, and of a search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.catalog.dedup import Match
from app.catalog.types import CatalogRecord, Hit, ItemRecord

# A precondition on an item about to be deleted: raises (e.g. a 412) to refuse.
ItemCheck = Callable[[ItemRecord], None]


@dataclass(frozen=True)
class ItemSpec:
    """What a client says about one uploaded image."""

    id: str | None = None
    label: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# What an add's answer says of a blank picture it added (AddOutcome.blank)
BLANK_WARNING = "blank picture (one flat colour): it matches every query equally"


@dataclass(frozen=True)
class AddOutcome:
    """Items added (in request order), with skip_duplicates the copies left out, and the
    positions in the request of blank pictures (one flat colour: added, but useless)."""

    records: list[ItemRecord]
    duplicates: list[Match]
    blank: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SearchOutcome:
    catalog: CatalogRecord
    hits: list[list[Hit]]
    embed_ms: float
    search_ms: float
