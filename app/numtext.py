"""Non-negative integers written as text by someone else: HTTP headers, directory names.

`str.isdigit()` alone is not the check it looks like: it is true for '²' or '³', which `int()`
refuses, and `int()` refuses more than 4,300 digits. Both were 500s once (a Content-Length of
'²' from a client or from a fetched URL's server).
"""

from __future__ import annotations

from typing import Final

MAX_DIGITS: Final = 18  # below 2**63; a longer number is nothing this service accepts


def ascii_uint(text: str) -> int | None:
    """The value of `text` if it is 1-18 ASCII digits and nothing else, else None (strip
    header values first)."""
    if not text or len(text) > MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)
