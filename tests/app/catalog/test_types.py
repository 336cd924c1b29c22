from __future__ import annotations

import pytest

from app.catalog.types import check_catalog_name, check_item_id, check_label
from app.errors import InvalidRequest


@pytest.mark.parametrize("item_id", ["item\n", "a\nb", "\nitem", "item ", "", "x" * 129])
def test_item_ids_with_line_breaks_or_out_of_pattern_are_refused(item_id: str) -> None:
    # re's `$` matches before a final newline: 'item\n' was stored as an id.
    with pytest.raises(InvalidRequest, match="Invalid item id"):
        check_item_id(item_id)


@pytest.mark.parametrize("name", ["shop\n", "Shop", "-shop", "x" * 65])
def test_catalog_names_out_of_pattern_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="Invalid catalog name"):
        check_catalog_name(name)


def test_good_names_pass() -> None:
    assert check_item_id("SKU-1:a.b_c") == "SKU-1:a.b_c"
    assert check_catalog_name("shop_2") == "shop_2"


def test_labels_are_trimmed_and_composed() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # typed, and from a macOS file name
    assert check_label(f" {decomposed} ") == check_label(composed) == composed
    assert check_label(None) is None
    for bad in ("", "   ", "a\nb", "x" * 1000):
        with pytest.raises(InvalidRequest):
            check_label(bad)
