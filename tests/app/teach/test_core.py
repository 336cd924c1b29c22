"""app.teach.core: which label a two-class model's threshold is for."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.teach.core import check_positive_label, positive_index
from app.teach.errors import NotEnoughExamples


def test_the_positive_label_is_the_requested_one_or_not_the_negative_sounding_one() -> None:
    assert positive_index(["bird", "not_bird"], None) == 0
    assert positive_index(["not-santa", "santa"], None) == 1
    assert positive_index(["Other", "cat"], None) == 1
    # Two ordinary categories are not a yes/no question: no positive label (it was the first).
    assert positive_index(["cat", "dog"], None) is None
    assert positive_index(["Sandal", "Sneaker"], None) is None
    assert positive_index(["nothing", "notebook"], None) is None  # whole first words only
    assert positive_index(["Background", "cat"], None) == 1
    assert positive_index(["dog", "no-dog"], None) == 0
    assert positive_index(["cat", "dog"], "dog") == 1
    with pytest.raises(NotEnoughExamples, match="not one of"):
        positive_index(["cat", "dog"], "bird")


def test_positive_label_needs_exactly_two_labels() -> None:
    check_positive_label(None, ["a", "b", "c"])
    check_positive_label("b", ["a", "b"])
    with pytest.raises(InvalidRequest, match=r"two-class models.*3 labels: a, b, c"):
        check_positive_label("b", ["a", "b", "c"])
    with pytest.raises(NotEnoughExamples, match="not one of"):
        check_positive_label("z", ["a", "b"])
