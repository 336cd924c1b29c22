"""The page strips the server's batch prefix from a problem's detail (classify.js stripIndex:
the card already names its file). Checked without a browser: the page's own regular expression,
read from classify.js, against what app.errors.batch_position writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.errors import batch_position

CLASSIFY_JS = Path(__file__).parents[2] / "app" / "static" / "classify.js"


def page_pattern() -> re.Pattern[str]:
    source = CLASSIFY_JS.read_text(encoding="utf-8")
    body = source[source.index("function stripIndex(") :]
    found = re.search(r"copy\.detail\.replace\(/(.+?)/, \"\"\)", body)
    assert found, "stripIndex's regular expression not found in classify.js"
    return re.compile(found.group(1))  # this one is the same in JavaScript and Python


@pytest.mark.parametrize("name", [None, "x.txt", "photo (1).jpg", "a, b).png", "日本.png"])
def test_the_page_strips_the_batch_prefix_the_server_writes(name: str | None) -> None:
    pattern = page_pattern()
    for i in (0, 1, 11):
        detail = f"{batch_position(i, name)}: The file is not an image (text)."
        assert pattern.sub("", detail, count=1) == "The file is not an image (text)."
    # a detail without the prefix is left alone
    assert pattern.sub("", "image 2 is fine (1): x", count=1) == "image 2 is fine (1): x"
