"""Right-to-left class names in Teach's sentences (real Chromium, real server): a label such as
"طائر" (bird) inside a warning sits in its own <bdi>, so it cannot pull the words and numbers
around it into its direction ("Classes “طائر” (4) have ..." read "Classes “(4) ”طائر" before)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.app.teach.conftest import fm_test_split, png, write_sneakers_and_bags
from tests.browser.conftest import fill_teach_form

pytestmark = pytest.mark.browser
BIRD = "طائر"  # Arabic for "bird": a right-to-left label

# The <bdi> holding `name` in `box`, and the left edge of the first "(" after it on screen.
AFTER_NAME = """(box, name) => {
  const b = [...box.querySelectorAll('bdi')].find((x) => x.textContent === name);
  if (!b) return null;
  const next = b.nextSibling;
  const i = next.textContent.indexOf('(');
  const r = document.createRange();
  r.setStart(next, i);
  r.setEnd(next, i + 1);
  return { right: b.getBoundingClientRect().right, paren: r.getBoundingClientRect().left,
           top: b.getBoundingClientRect().top, parenTop: r.getBoundingClientRect().top };
}"""


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("teach-rtl")
    files = write_sneakers_and_bags(out, 4)
    x, _ = fm_test_split()
    broken = out / "broken.png"
    broken.write_bytes(png(x[0])[:70])  # starts like a PNG: sent, refused by the server
    files["broken"] = [broken]
    return files


def bdi_texts(locator: Any) -> list[str]:
    return list(locator.locator("bdi").all_inner_texts())


def test_a_right_to_left_label_in_a_teach_error_is_isolated(
    open_page: Any, pictures: dict[str, list[Path]]
) -> None:
    """The class is left with one usable picture: the error names it, and the refused file."""
    page = open_page()
    files = {
        BIRD: [str(pictures["sneaker"][0]), str(pictures["broken"][0])],
        "bag": [str(p) for p in pictures["bag"][:2]],
    }
    fill_teach_form(page, "rtl-error", files)
    page.locator('#teach .teach-count:text-is("2 pictures")').nth(1).wait_for()
    page.click("#teach-train")
    error = page.locator("#teach .teach-error")
    error.wait_for(timeout=30_000)
    detail = error.locator("p")
    assert f"Class “{BIRD}” has only 1 usable picture" in detail.inner_text(), error.inner_text()
    assert BIRD in bdi_texts(detail) and "broken.png" in bdi_texts(detail), detail.inner_html()
    issue = page.locator("#teach .teach-class").first.locator(".teach-issue")
    assert bdi_texts(issue) == ["broken.png"], issue.inner_html()


def test_a_right_to_left_label_in_the_results_warnings_is_isolated(
    open_page: Any, pictures: dict[str, list[Path]]
) -> None:
    page = open_page()
    files = {
        BIRD: [str(p) for p in pictures["sneaker"]],
        "bag": [str(p) for p in pictures["bag"]],
    }
    fill_teach_form(page, "rtl-results", files)
    page.locator('#teach .teach-count:text-is("4 pictures")').nth(1).wait_for()
    page.click("#teach-train")
    page.wait_for_selector("#teach .teach-results:not([hidden])", timeout=60_000)
    few = page.locator("#teach .teach-warn li", has_text="fewer than")
    assert few.count() == 1, page.locator("#teach .teach-warn").inner_text()
    assert f"“{BIRD}” (4)" in few.inner_text(), few.inner_text()
    assert BIRD in bdi_texts(few) and "bag" in bdi_texts(few), few.inner_html()
    # On screen the count follows the name, on its line: the name did not take it along.
    at = few.evaluate(AFTER_NAME, BIRD)
    assert at is not None and at["paren"] >= at["right"] - 0.5, at
    assert abs(at["parenTop"] - at["top"]) < 2, at
    summary = page.locator("#teach .teach-summary li", has_text="recognised")
    assert any(BIRD in bdi_texts(summary.nth(i)) for i in range(summary.count()))
