"""What a first-time user saw wrong in the 2026-12 re-check of the page: a disabled Train button
that looked enabled, a 'Ready' pill and a 'Can't reach the server' banner that outlived an
outage, one click per card to retry after it, a drop zone read out with its hint twice, a cat
photo called 'maybe not something the model knows', and a similar-images grid two thumbnails
wide at phone width (real Chromium, real server)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import PHONE
from tests.browser.test_upload_page import (
    CAT,
    FASHION,
    FASHION_BATCH,
    api_predict,
    cards,
    select_model,
    wait_settled,
)

pytestmark = pytest.mark.browser


def test_a_disabled_button_looks_disabled(open_page: Any) -> None:
    """Train is disabled until two classes have two pictures each, and while training; it
    looked exactly like the enabled button (full colour, pointer cursor)."""
    page = open_page()
    train = page.locator("#teach-train")
    train.scroll_into_view_if_needed()
    assert train.is_disabled()
    opacity, cursor = train.evaluate(
        "b => { const s = getComputedStyle(b); return [Number(s.opacity), s.cursor]; }"
    )
    assert opacity < 0.7 and cursor == "not-allowed", (opacity, cursor)
    add_class = page.get_by_role("button", name="Add a class")
    assert add_class.evaluate("b => Number(getComputedStyle(b).opacity)") == 1


def test_after_an_outage_the_pill_says_so_and_one_try_again_recovers_every_card(
    open_page: Any, photos: Path
) -> None:
    """While requests could not reach the server the pill kept saying 'Ready' (until its next
    check, 15 s later); after the outage each card needed its own 'Try again', and the banner
    'Can't reach the server' stayed up after they had all succeeded."""
    page = open_page()
    select_model(page, "tiny")
    page.wait_for_selector("#server-status[data-state='ready']")
    down = lambda route: route.abort("internetdisconnected")  # noqa: E731
    page.route("**/predict*", down)
    page.route("**/readyz", down)
    page.set_input_files("#file-input", [str(photos / p) for p in FASHION_BATCH[:2]])
    wait_settled(page, 2)
    assert [c.get_attribute("data-state") for c in cards(page).all()] == ["error", "error"]
    assert page.locator("#alert").is_visible()
    page.wait_for_selector("#server-status[data-state='down']", timeout=3000)
    assert page.locator("#server-status").inner_text().strip() == "Offline"

    page.unroute("**/predict*")
    page.unroute("**/readyz")
    cards(page).first.get_by_role("button", name="Try again").click()
    wait_settled(page, 2)
    assert [c.get_attribute("data-state") for c in cards(page).all()] == ["done", "done"]
    assert page.locator("#alert").is_hidden()
    page.wait_for_selector("#server-status[data-state='ready']", timeout=3000)


def test_a_failure_that_retrying_cannot_mend_is_not_retried_with_the_others(
    open_page: Any, photos: Path, tmp_path: Path
) -> None:
    """'Try again' takes the cards that failed for a passing reason along, not a text file."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    page = open_page()
    select_model(page, "tiny")
    page.set_input_files("#file-input", str(notes))
    wait_settled(page, 1)
    page.route("**/predict*", lambda route: route.abort("internetdisconnected"))
    page.set_input_files("#file-input", str(photos / FASHION))
    wait_settled(page, 2)
    page.unroute("**/predict*")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/predict" in r.url else None)
    cards(page).first.get_by_role("button", name="Try again").click()
    wait_settled(page, 2)
    assert [c.get_attribute("data-state") for c in cards(page).all()] == ["done", "error"]
    assert len(sent) == 1, sent


@pytest.mark.parametrize(
    ("size", "title"),
    [("desktop", "Drop images here or browse"), ("phone", "Choose photos")],
)
def test_the_drop_zone_is_named_by_its_title_and_described_by_its_hint(
    open_page: Any, size: str, title: str
) -> None:
    """Its name was the title and the hint run together, and the hint again as description."""
    from playwright.sync_api import expect

    page = open_page(**(PHONE if size == "phone" else {}))
    zone = page.get_by_role("button", name=title, exact=True)
    assert zone.count() == 1
    expect(zone).to_have_accessible_description(re.compile(r"JPEG, PNG, WebP"))


def test_labels_that_share_the_probability_are_not_called_unknown(
    open_page: Any, api: httpx.Client, photos: Path
) -> None:
    """imagenet splits a cat photo over Egyptian cat, tiger cat and tabby; the card said 'this
    may not be something the model was trained to recognise'."""
    if "imagenet" not in {m["name"] for m in api.get("/v1/models").json()["models"]}:
        pytest.skip("the imagenet bundle is not served")
    preds = api_predict(api, "imagenet", [photos / CAT])["results"][0]["predictions"]
    assert preds[0]["score"] < 0.5 <= sum(p["score"] for p in preds[:3]), preds
    page = open_page()
    select_model(page, "imagenet")
    page.set_input_files("#file-input", str(photos / CAT))
    wait_settled(page, 1)
    note = cards(page).first.locator(".result-note").inner_text()
    assert "torn between its top 3 labels" in note and "trained to recognise" not in note, note


def test_similar_images_fit_a_phone_card(
    open_page: Any, api: httpx.Client, photos: Path, wardrobe: str | None, artifacts: Path
) -> None:
    """At 390 px the grid beside the preview held two 170 px thumbnails a row: eight similar
    images made the card about 700 px tall."""
    models = api.get("/v1/models").json()["models"]
    with_catalog = [m for m in models if m.get("default_catalog")]
    if not with_catalog:
        pytest.skip("no served model advertises a default_catalog")
    page = open_page(**PHONE)
    select_model(page, with_catalog[0]["name"])
    page.set_input_files("#file-input", str(photos / FASHION))
    wait_settled(page, 1)
    items = cards(page).first.locator(".similar-item")
    assert items.count() >= 6
    boxes = [items.nth(i).bounding_box() for i in range(items.count())]
    columns = len({round(b["x"]) for b in boxes})
    assert columns >= 3, boxes
    assert max(b["width"] for b in boxes) <= 90, boxes
    assert all(b["x"] + b["width"] <= 390 for b in boxes), boxes
    cards(page).first.screenshot(path=str(artifacts / "phone-similar-card.png"))


def test_naming_the_classes_after_adding_their_pictures_enables_train(
    open_page: Any, tmp_path: Path
) -> None:
    """Pictures first, names second: Train stayed disabled (typing a class name did not
    re-check the form) under 'Add at least two classes with two or more pictures each'."""
    from tests.app.teach.conftest import write_sneakers_and_bags

    files = write_sneakers_and_bags(tmp_path, 3)
    page = open_page()
    page.locator("#teach").scroll_into_view_if_needed()
    page.fill("#teach-name", "names-last")
    classes = page.locator("#teach .teach-class")
    for i, label in enumerate(files):
        classes.nth(i).locator("input[type=file]").set_input_files([str(p) for p in files[label]])
        classes.nth(i).locator(".teach-count:text-is('3 pictures')").wait_for()
    train = page.locator("#teach-train")
    assert train.is_disabled()
    assert "no name" in page.locator("#teach .teach-hint").inner_text()
    for i, label in enumerate(files):
        classes.nth(i).locator(".teach-class-name").press_sequentially(label)
    assert train.is_enabled()
    assert "2 classes ready" in page.locator("#teach .teach-hint").inner_text()
    # Each class's controls have names of their own for a screen reader.
    first, second = list(files)
    assert page.get_by_role("textbox", name="Name of class 2", exact=True).count() == 1
    assert page.get_by_role("button", name=f"Remove class 1 ({first})", exact=True).count() == 1
    add = page.get_by_role("button", name=f"Add pictures to class 2 ({second})", exact=True)
    assert add.count() == 1


def test_switching_model_cancels_the_request_still_waiting(open_page: Any, photos: Path) -> None:
    """Requests go one after another; a request for the model the user just left kept the
    new model's request waiting behind it until it ended. It is cancelled now."""
    page = open_page()
    select_model(page, "tiny")
    held: list[Any] = []

    def hold(route: Any) -> None:  # never answered: a stuck request
        held.append(route)

    page.route("**/v1/models/tiny/predict*", hold)
    page.set_input_files("#file-input", str(photos / FASHION))
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the page sent no request"
    aborted: list[str] = []
    page.on("requestfailed", lambda r: aborted.append(r.url))
    select_model(page, "products")
    page.wait_for_function(
        "() => { const c = document.querySelector('#results > li.result');"
        " return c && c.dataset.state === 'done'; }",
        timeout=10_000,
    )
    assert cards(page).count() == 1
    assert "with products" in page.locator("#summary").inner_text()
    assert any("/models/tiny/predict" in u for u in aborted), aborted
    page.unroute("**/v1/models/tiny/predict*")
