from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.bundle_files import read_labels
from app.bundle_io import BundleError
from app.catalog.types import check_catalog_name, check_item_id, check_label, new_item_id
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


def test_labels_with_joiners_and_emoji_tags_are_printable(tmp_path: Path) -> None:
    """Round 21: str.isprintable refused emoji sequences joined by ZWJ (a black cat, the rainbow
    flag), Persian words with ZWNJ and subdivision flags (tag characters). They are accepted,
    in catalogs and in a bundle's labels.txt alike (a taught model's labels come from its
    catalog); bidi overrides, zero-width spaces and a BOM still are not."""
    cat = "\U0001f408\u200d\u2b1b"
    flag = "\U0001f3f3\ufe0f\u200d\U0001f308"
    persian = "\u06af\u0631\u0628\u0647\u200c\u0647\u0627"
    scotland = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    for good in (cat, flag, persian, scotland):
        assert check_label(good) == good
    for bad in ("a\u202eb", "a\u200bb", "\ufeffx", "a\u2066b"):
        with pytest.raises(InvalidRequest):
            check_label(bad)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join((cat, flag, persian, scotland)) + "\n", encoding="utf-8")
    assert read_labels(labels) == (cat, flag, persian, scotland)
    labels.write_text("a\nb\u202ec\n", encoding="utf-8")
    with pytest.raises(BundleError, match="unprintable"):
        read_labels(labels)


def test_generated_item_ids_are_valid_and_strictly_increasing() -> None:
    ids = [new_item_id() for _ in range(5000)]  # many fall in one millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(check_item_id(i) == i and len(i) == 21 for i in ids)


def test_generated_item_ids_keep_increasing_when_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = new_item_id()
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)  # 1970: far behind
    later = [new_item_id() for _ in range(3)]
    assert [first, *later] == sorted({first, *later})
