"""Answers that never come, or that the page cannot use (round 43 check of the page, real
Chromium, real server): one predict request held unanswered left its card "Classifying…" for
good with every later upload waiting behind it, and a frozen server left the pill "Ready"; a
502 for the model list was never asked again; a 200 whose body was not JSON (an auth proxy's
sign-in page, an answer cut short) left the card spinning."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.app.teach.conftest import write_sneakers_and_bags
from tests.browser.conftest import DESKTOP, _open, fill_teach_form
from tests.browser.test_upload_page import FASHION, FASHION_BATCH, cards, select_model

pytestmark = pytest.mark.browser
PREDICT = re.compile(r"/v1/models/[^/]+/predict")


def open_with_clock(browser: Any, server: str) -> tuple[Any, Any, list[str]]:
    """A page whose timers Playwright can move forward (the clock runs on by itself too)."""
    context, page, errors = _open(browser, server, **DESKTOP)
    page.clock.install()
    page.goto("/")
    page.wait_for_selector("#model-select:not([disabled])")
    return context, page, errors


def card_state(page: Any, i: int) -> str:
    state: str = cards(page).nth(i).get_attribute("data-state")
    return state


def _wait_held(page: Any, held: list[Any], why: str) -> None:
    """Until a route handler has held a request (5 s at most)."""
    for _ in range(100):
        if held:
            return
        page.wait_for_timeout(50)
    raise AssertionError(why)


def _teach_three_shoes(page: Any, model: str, tmp: Path) -> None:
    """The Teach form filled: `model`, three sneakers and three bags, both counted."""
    shoes = write_sneakers_and_bags(tmp, 3)
    fill_teach_form(page, model, {k: [str(p) for p in shoes[k]] for k in shoes})
    page.locator('#teach .teach-count:text-is("3 pictures")').nth(1).wait_for()


def _first_card_done(page: Any) -> None:
    page.wait_for_function(
        "() => document.querySelector('#results > li.result').dataset.state === 'done'",
        timeout=10_000,
    )


def test_a_predict_request_held_unanswered_fails_its_card_and_the_queue_goes_on(
    browser: Any, server: str, photos: Path
) -> None:
    context, page, errors = open_with_clock(browser, server)
    try:
        select_model(page, "tiny")
        held: list[Any] = []

        def hold_first(route: Any) -> None:
            if not held:
                held.append(route)  # never answered: a stalled proxy
            else:
                route.continue_()

        page.route(PREDICT, hold_first)
        page.set_input_files("#file-input", str(photos / FASHION))
        page.wait_for_function("() => document.querySelector('#results > li.result')")
        _wait_held(page, held, "the page sent no request")
        page.set_input_files("#file-input", str(photos / FASHION_BATCH[0]))
        page.wait_for_timeout(1500)
        # The second upload waits behind the first request (they go one after another).
        assert [card_state(page, 0), card_state(page, 1)] == ["pending", "pending"]

        page.clock.fast_forward(35_000)  # the page gives a predict call 30 s and a bit
        first = cards(page).nth(1)
        page.wait_for_function(
            "() => { const c = document.querySelectorAll('#results > li.result');"
            " return c.length === 2 && [...c].every((e) => e.dataset.state !== 'pending'); }",
            timeout=10_000,
        )
        assert card_state(page, 0) == "done"  # the later upload was classified
        assert first.get_attribute("data-state") == "error"
        assert first.get_attribute("aria-busy") == "false"
        assert "not answering" in first.locator(".result-error").inner_text().lower()
        assert first.get_by_role("button", name="Try again").count() == 1
        assert page.locator("#results").get_attribute("aria-busy") == "false"
        # Try again sends it afresh (this time it is answered).
        first.get_by_role("button", name="Try again").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results > li.result')]"
            ".every((e) => e.dataset.state === 'done')",
            timeout=10_000,
        )
    finally:
        context.close()
    assert not errors, errors


def test_a_frozen_server_is_said_not_to_answer(browser: Any, server: str, photos: Path) -> None:
    """SIGSTOP'd server: /readyz and predict both unanswered. The pill's own check waited for
    good (it said 'Ready' and never asked again), the card span 'Classifying…'."""
    context, page, errors = open_with_clock(browser, server)
    try:
        select_model(page, "tiny")
        page.wait_for_selector("#server-status[data-state='ready']")
        held: list[Any] = []
        hold = lambda route: held.append(route)  # noqa: E731
        page.route(PREDICT, hold)
        page.route("**/readyz", hold)
        page.set_input_files("#file-input", str(photos / FASHION))
        page.wait_for_function("() => document.querySelector('#results > li.result')")
        page.clock.fast_forward(16_000)  # the pill checks /readyz every 15 s
        page.wait_for_timeout(300)
        page.clock.fast_forward(6_000)  # and gives it 5 s
        page.wait_for_selector("#server-status[data-state='down']", timeout=5_000)
        page.clock.fast_forward(14_000)  # the predict call gets 30 s and a bit
        pill = page.locator("#server-status")
        page.wait_for_function(
            "() => document.querySelector('#results > li.result').dataset.state === 'error'",
            timeout=10_000,
        )
        assert "not answering" in pill.inner_text().lower(), pill.inner_text()
        card = cards(page).first
        assert "not answering" in card.locator(".result-error").inner_text().lower()
        assert page.locator("#alert").is_visible()
        # The server answers again: the pill says so at its next check, one Try again mends it.
        page.unroute("**/readyz")
        page.unroute(PREDICT)
        page.clock.fast_forward(6_000)
        page.wait_for_selector("#server-status[data-state='ready']", timeout=10_000)
        card.get_by_role("button", name="Try again").click()
        _first_card_done(page)
        assert page.locator("#alert").is_hidden()
    finally:
        context.close()
    assert not errors, errors


def test_the_model_list_is_asked_again_after_a_proxy_error(
    browser: Any, server: str, photos: Path
) -> None:
    """A reverse proxy's 502 for GET /v1/models: the page said so and never asked again."""
    context, page, errors = _open(browser, server, **DESKTOP)
    try:
        failures = {"left": 2}

        def flaky(route: Any) -> None:
            if failures["left"]:
                failures["left"] -= 1
                route.fulfill(status=502, content_type="text/html", body="<h1>502 Bad Gateway</h1>")
            else:
                route.continue_()

        page.route("**/v1/models", flaky)
        page.goto("/")
        page.locator("#alert").wait_for()
        assert page.locator("#model-select").is_disabled()
        # An image added meanwhile waits for the models and is classified once they load.
        page.set_input_files("#file-input", str(photos / FASHION))
        page.wait_for_selector("#model-select:not([disabled])", timeout=15_000)
        assert failures["left"] == 0
        _first_card_done(page)
        assert page.locator("#alert").is_hidden()
    finally:
        context.close()
    assert not errors, errors


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", "<!doctype html><html><body><h1>Sign in</h1><form></form></body></html>"),
        ("application/json", '{"model":"tiny","version":"1","results":[{"predictions":[{"la'),
        ("application/json", json.dumps({"unexpected": True})),
    ],
    ids=["sign-in page", "cut short", "other json"],
)
def test_an_ok_answer_that_cannot_be_read_is_an_error_with_try_again(
    open_page: Any, photos: Path, content_type: str, body: str
) -> None:
    page = open_page()
    select_model(page, "tiny")
    fulfil = lambda route: route.fulfill(status=200, content_type=content_type, body=body)  # noqa: E731
    page.route(PREDICT, fulfil)
    page.set_input_files("#file-input", str(photos / FASHION))
    card = cards(page).first
    page.wait_for_function(
        "() => document.querySelector('#results > li.result')?.dataset.state === 'error'",
        timeout=5_000,
    )
    assert card.get_attribute("aria-busy") == "false"
    assert "answer could not be read" in card.locator(".result-error").inner_text()
    assert page.locator("#results").get_attribute("aria-busy") == "false"
    page.unroute(PREDICT)
    card.get_by_role("button", name="Try again").click()
    _first_card_done(page)


def test_a_teach_upload_held_unanswered_says_so_and_train_works_again(
    browser: Any, server: str, tmp_path: Path
) -> None:
    """Round 44: the Teach section's requests had no deadline: an upload a proxy held left the
    progress bar "Uploading…" and Train disabled for good."""
    context, page, errors = open_with_clock(browser, server)
    try:
        _teach_three_shoes(page, "held-upload", tmp_path)
        held: list[Any] = []
        items = re.compile(r"/v1/catalogs/[^/]+/items$")
        page.route(items, lambda route: held.append(route))
        page.click("#teach-train")
        _wait_held(page, held, "the page sent no upload")
        page.wait_for_timeout(500)
        assert page.locator("#teach-train").is_disabled()
        page.clock.fast_forward(35_000)  # 30 s and the upload's time at 250 kB/s
        error = page.locator("#teach .teach-error")
        error.wait_for(timeout=10_000)
        assert "not answering" in error.inner_text().lower(), error.inner_text()
        assert page.locator("#teach-train").is_enabled()
        assert page.locator("#teach .teach-progress").is_hidden()
        page.unroute(items)
        page.click("#teach-train")
        page.locator("#teach .teach-results").wait_for(timeout=60_000)
        assert "held-upload" in page.locator("#teach .teach-results").inner_text()
    finally:
        context.close()
    assert not errors, errors


def test_a_lost_job_poll_is_asked_again_and_the_result_shown(
    browser: Any, server: str, tmp_path: Path
) -> None:
    """Round 44: one poll of the job that failed (a network blip) showed "Can't reach the
    server", stopped following, and once the server answered again the section looked as
    before Train, while the job went on to succeed. Polls are asked again."""
    context, page, errors = _open(browser, server, **DESKTOP)
    try:
        page.goto("/")
        _teach_three_shoes(page, "blip", tmp_path)
        failed: list[str] = []

        def first_poll_fails(route: Any) -> None:
            if not failed:
                failed.append(route.request.url)
                route.abort("internetdisconnected")
            else:
                route.continue_()

        page.route(re.compile(r"/v1/jobs/[A-Za-z0-9]+$"), first_poll_fails)
        page.click("#teach-train")
        page.locator("#teach .teach-results").wait_for(timeout=60_000)
        assert failed, "no poll was made to fail"
        assert "blip v1 is ready" in page.locator("#teach .teach-results").inner_text()
        assert page.locator("#teach .teach-error").is_hidden()
    finally:
        context.close()
    assert not [e for e in errors if "internetdisconnected" not in e.lower()], errors


def test_leaving_during_the_upload_asks_first(browser: Any, server: str, tmp_path: Path) -> None:
    """Round 44: a reload while the pictures were uploading lost them without a word."""
    context, page, _errors = _open(browser, server, **DESKTOP)
    try:
        page.goto("/")
        _teach_three_shoes(page, "leaving", tmp_path)
        held: list[Any] = []
        page.route(re.compile(r"/v1/catalogs/[^/]+/items$"), lambda route: held.append(route))
        page.click("#teach-train")
        _wait_held(page, held, "the page sent no upload")
        with page.expect_event("dialog", timeout=5_000) as info:
            page.close(run_before_unload=True)
        assert info.value.type == "beforeunload"
        info.value.dismiss()  # stay
        page.wait_for_timeout(300)
        assert not page.is_closed()
    finally:
        context.close()
