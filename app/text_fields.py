"""Free-text fields a client stores (a catalog's or a taught model's description): printable
text, line breaks and tabs only, as labels are printable (round 43: a teach job's description
kept NUL, terminal escape sequences and a right-to-left override, shown as given on the page
and in the model card)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from app.bundle_files import printable_label

_BREAKS = str.maketrans("", "", "\r\n\t")  # line breaks (either convention) and tabs


def _printable(value: str) -> str:
    if not printable_label(value.translate(_BREAKS)):
        raise ValueError(
            "holds a control or bidirectional-override character; a description is printable "
            "text, line breaks and tabs"
        )
    return value


CatalogDescription = Annotated[str, Field(max_length=2000), AfterValidator(_printable)]
ModelDescription = Annotated[str, Field(max_length=500), AfterValidator(_printable)]
