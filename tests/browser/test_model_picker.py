"""Round 32 audit of the page (real Chromium, real server): a first visit while the models were
still loading picked the widest model loaded so far (digits), stored it as the user's choice
and classified a photo with it; the sticky top bar covered a new result card on a phone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import DESKTOP, PHONE, _open
from tests.browser.test_upload_page import CAT, FASHION, cards, top_label, wait_settled

pytestmark = pytest.mark.browser


def test_a_visit_while_models_load_waits_for_them_and_stores_no_choice(
    browser: Any, server: str, api: httpx.Client, photos: Path
) -> None:
    served = api.get("/v1/models").json()
    widest = max(served["models"], key=lambda m: m["num_classes"])
    narrow = min(served["models"], key=lambda m: m["num_classes"])
    assert widest["num_classes"] > narrow["num_classes"]
    loading = {  # as /v1/models answers while the rest still load
        **served,
        "models": [narrow],
        "loading": [m["name"] for m in served["models"] if m is not narrow],
    }
    context, page, errors = _open(browser, server, **DESKTOP)
    try:
        state = {"loading": True}
        predicts: list[str] = []
        page.on("request", lambda r: predicts.append(r.url) if r.method == "POST" else None)

        def models_route(route: Any) -> None:
            if state["loading"]:
                route.fulfill(status=200, content_type="application/json", body=json.dumps(loading))
            else:
                route.continue_()

        page.route("**/v1/models", models_route)
        page.goto("/")
        page.wait_for_selector("#model-select:not([disabled])")
        assert page.evaluate("localStorage.getItem('imgclass.model')") is None
        page.set_input_files("#file-input", str(photos / CAT))
        card = cards(page).first
        page.wait_for_function(
            "() => document.querySelector('#results > li.result')?.textContent.includes('loading')"
        )
        page.select_option("#topk-select", "10")  # any run, not only a new image's, waits
        page.wait_for_timeout(500)
        assert predicts == [], "the photo was sent to a model picked before the list was whole"
        state["loading"] = False  # the page polls again (1.5 s) and finds every model
        page.wait_for_function(
            "n => document.querySelector('#model-select').value === n", arg=widest["name"]
        )
        wait_settled(page, 1)
        assert len(predicts) == 1 and f"/models/{widest['name']}/predict" in predicts[0]
        assert "top_k=10" in predicts[0]
        assert top_label(card)  # classified, by the model a visit after loading would pick
        assert page.evaluate("localStorage.getItem('imgclass.model')") is None
        # The user's own pick is kept for later visits.
        page.select_option("#model-select", narrow["name"])
        assert page.evaluate("localStorage.getItem('imgclass.model')") == narrow["name"]
    finally:
        context.close()
    assert not [e for e in errors if "pageerror" in e], errors


def test_a_new_result_card_is_not_under_the_top_bar_on_a_phone(
    browser: Any, server: str, photos: Path, artifacts: Path
) -> None:
    for reduced in ("no-preference", "reduce"):
        context, page, _ = _open(browser, server, **PHONE, reduced_motion=reduced)
        try:
            page.goto("/")
            page.wait_for_selector("#model-select:not([disabled])")
            page.set_input_files("#file-input", str(photos / FASHION))
            wait_settled(page, 1)
            page.wait_for_timeout(800)  # the smooth scroll ends
            bar = page.locator(".topbar").bounding_box()
            card = cards(page).first.bounding_box()
            assert bar is not None and card is not None
            assert card["y"] >= bar["y"] + bar["height"], (reduced, bar, card)
            page.screenshot(path=str(artifacts / f"phone-first-result-{reduced}.png"))
        finally:
            context.close()


def test_the_api_docs_are_linked_at_every_width(browser: Any, server: str) -> None:
    context, page, _ = _open(browser, server, **PHONE)
    try:
        page.goto("/")
        links = page.locator("a[href='/docs']")
        assert any(links.nth(i).is_visible() for i in range(links.count()))
    finally:
        context.close()


def test_no_file_input_is_an_unnamed_control_for_screen_readers(open_page: Any) -> None:
    """The Teach classes' hidden pickers were announced as unnamed "Choose files" buttons
    (axe: label, critical), unlike the upload area's (round 32)."""
    page = open_page()
    page.wait_for_selector(".teach-class")
    inputs = page.evaluate(
        "() => [...document.querySelectorAll('input[type=file]')].map("
        "i => [i.getAttribute('aria-hidden'), i.tabIndex])"
    )
    assert len(inputs) >= 4, inputs  # the upload area's two and one per Teach class
    assert all(hidden == "true" and tab == -1 for hidden, tab in inputs), inputs
