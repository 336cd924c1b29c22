"""The page is plain files with no build step (app/static): every style sheet and module it names
loads, and every one there is named. A missing style sheet shows only as Chromium's "Failed to
load resource", which the other tests let pass (they expect 4xx answers from the API)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.browser
STATIC = ROOT / "app" / "static"
NOT_THE_PAGES = {"api-docs.js"}  # /docs's own start-up code (app/api/api_docs.py)

LOADED = """() => performance.getEntriesByType('resource')
  .filter((e) => new URL(e.name).pathname.startsWith('/static/'))
  .map((e) => [new URL(e.name).pathname.slice('/static/'.length), e.responseStatus])"""

SHEETS = """() => [...document.querySelectorAll('link[rel=stylesheet]')]
  .map((l) => [l.getAttribute('href'), l.sheet ? l.sheet.cssRules.length : -1])"""


def test_every_style_sheet_and_module_loads_and_each_file_is_used(open_page: Any) -> None:
    page = open_page()
    page.locator("#teach-backbone option").first.wait_for(state="attached")
    loaded = dict(page.evaluate(LOADED))
    assert all(status == 200 for status in loaded.values()), loaded
    sheets = page.evaluate(SHEETS)
    assert all(rules > 0 for _, rules in sheets), sheets
    linked = {href.removeprefix("/static/") for href, _ in sheets}
    assert linked == {p.name for p in STATIC.glob("*.css")}, linked
    modules = {name for name in loaded if name.endswith(".js")}
    assert modules == {p.name for p in STATIC.glob("*.js")} - NOT_THE_PAGES, modules
