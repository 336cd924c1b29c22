"""The page under its own Content-Security-Policy (app/security_headers.py), enforced: a
predict with similar pictures and the teach panel work, and Chromium reports no violation
(each would be a console error, which fails the test through `open_page`). Other browser
tests lift the policy for Playwright's eval-based waits; this one waits on selectors only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.test_upload_page import FASHION

pytestmark = pytest.mark.browser


def test_the_page_works_with_its_policy_enforced(
    open_page: Any, api: httpx.Client, photos: Path, wardrobe: str | None, artifacts: Path
) -> None:
    models = api.get("/v1/models").json()["models"]
    with_catalog = [m["name"] for m in models if m.get("default_catalog")]
    assert with_catalog or wardrobe is None  # `tiny` has similar pictures once wardrobe exists
    model = with_catalog[0] if with_catalog else models[0]["name"]
    page = open_page(bypass_csp=False)
    policy = page.request.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'self'" in policy
    page.select_option("#model-select", model)
    page.wait_for_selector("#model-info:not(:empty)")
    page.set_input_files("#file-input", str(photos / FASHION))
    page.wait_for_selector("#results > li.result:not([data-state='pending'])")
    page.wait_for_selector("#results[aria-busy='false']")
    card = page.locator("#results > li.result").first
    assert card.get_attribute("data-state") == "done", card.inner_text()
    if with_catalog:  # the similar pictures are served thumbnails: img-src 'self'
        page.wait_for_selector("#results .similar img")
    page.wait_for_selector("#teach-backbone option", state="attached")
    page.screenshot(path=str(artifacts / "csp-enforced.png"), full_page=True)
