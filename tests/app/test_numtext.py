from __future__ import annotations

import pytest

from app.numtext import ascii_uint


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("9" * 18, int("9" * 18)),
        ("", None),
        (" 4", None),  # header values are stripped by the caller; names are taken as they are
        ("-1", None),
        ("+1", None),
        ("1_000", None),
        ("1.0", None),
        ("\u00b2", None),  # '²'.isdigit() is true and int('²') raises
        ("\u0663", None),  # Arabic-Indic three: int() would take it, HTTP does not
        ("9" * 19, None),
        ("1" * 5000, None),  # int() refuses more than 4,300 digits
    ],
)
def test_ascii_uint(text: str, value: int | None) -> None:
    assert ascii_uint(text) == value
