"""What a keyboard or screen-reader user meets in a result card, and a teach run that leaves the
browser console clean (real Chromium, real server, real pictures)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.teach.conftest import write_sneakers_and_bags
from tests.browser.conftest import fill_teach_form
from tests.browser.test_upload_page import (
    CAT,
    FASHION,
    api_predict,
    select_model,
    wait_settled,
)
from tests.live_server import live_server

pytestmark = pytest.mark.browser


def test_tab_reaches_remove_before_the_similar_images_and_each_has_one_clear_name(
    open_page: Any, api: httpx.Client, photos: Path, wardrobe: str | None
) -> None:
    models = api.get("/v1/models").json()["models"]
    with_catalog = [m for m in models if m.get("default_catalog")]
    if not with_catalog:
        pytest.skip("no served model advertises a default_catalog")
    model = with_catalog[0]["name"]
    expected = api_predict(api, model, [photos / FASHION], similar=8)["results"][0]["similar"]
    page = open_page()
    select_model(page, model)
    page.set_input_files("#file-input", str(photos / FASHION))
    wait_settled(page, 1)
    page.focus("#clear-button")
    order = []
    for _ in range(len(expected) + 2):
        page.keyboard.press("Tab")
        order.append(
            page.evaluate(
                "() => { const e = document.activeElement;"
                " return [e.className, e.getAttribute('aria-label') || ''] }"
            )
        )
    # The remove button sits at the card's top right: it comes first, the grid after it
    # (it came last, after every similar image, before).
    assert order[0] == ["result-remove", "Remove fashionMNIST_00_9.png"], order
    names = [name for _, name in order[1 : 1 + len(expected)]]
    top = expected[0]
    assert names[0].startswith(f"{top['label']}, "), names
    assert "similar (opens the image in a new tab)" in names[0]
    assert all(name.endswith("new tab)") for name in names), names


@pytest.fixture(scope="module")
def few_pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    files = write_sneakers_and_bags(tmp_path_factory.mktemp("teach-few"), 4)
    return {label: [str(p) for p in paths] for label, paths in files.items()}


def test_teaching_a_new_name_sends_no_request_that_fails(
    open_page: Any, few_pictures: dict[str, list[str]]
) -> None:
    """Chromium logs every 4xx answer as a console error; the page used to DELETE the example
    catalog blindly before creating it, so each first teach of a name logged a 404."""
    page = open_page()
    failed: list[str] = []
    console: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    fill_teach_form(page, "console-clean", {k: few_pictures[k] for k in ("sneaker", "bag")})
    page.click("#teach-train")
    page.wait_for_selector("#teach .teach-results:not([hidden])", timeout=60_000)
    assert "console-clean v1 is ready" in page.locator("#teach .teach-results").inner_text()
    assert failed == [] and console == [], (failed, console)


def test_summary_counts_every_image_of_a_run_not_only_the_last_request(
    open_page: Any, photos: Path
) -> None:
    """The page sends 8 images per request; 12 at once made the summary say '4 images'."""
    files = sorted((photos / "foolbox").glob("fashionMNIST_*.png"))[:12]
    page = open_page()
    select_model(page, "products")
    page.set_input_files("#file-input", [str(p) for p in files])
    wait_settled(page, 12)
    summary = page.locator("#summary").inner_text()
    assert summary.startswith("Last run: 12 images with products"), summary


def test_a_busy_server_is_not_called_loading(
    browser: Any, browser_models_dir: Path, photos: Path, tmp_path: Path
) -> None:
    """A real server whose request deadline (1 ms) no forward pass of `imagenet` meets answers
    every predict with 503 deadline-exceeded: the card says the server is busy and retries;
    it used to say 'Model still loading' / 'The model is warming up' (that is not-ready)."""
    env = {
        "IMGCLASS_MODELS_DIR": str(browser_models_dir),
        "IMGCLASS_ENABLED_MODELS": '["imagenet"]',
        "IMGCLASS_REQUEST_DEADLINE_S": "0.001",
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
    with live_server(tmp_path, env) as server:
        context = browser.new_context(base_url=server.base, viewport={"width": 1280, "height": 800})
        try:
            page = context.new_page()
            page.goto("/")
            page.wait_for_selector("#model-select:not([disabled])")
            select_model(page, "imagenet")
            page.set_input_files("#file-input", str(photos / CAT))
            busy = page.locator("#results > li.result .result-busy-text")
            page.wait_for_function(
                "() => document.querySelector('#results .result-busy-text')"
                "?.textContent.includes('retrying')"
            )
            assert busy.first.inner_text() == "Server busy, retrying…"
            # The message the card ends with, for the server's own problem body.
            message = page.evaluate(
                """async (b64) => {
                  const { problemMessage, readProblem } = await import('/static/problems.js');
                  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                  const form = new FormData();
                  form.append('file', new Blob([bytes], { type: 'image/png' }), 'cat.png');
                  const r = await fetch('/v1/models/imagenet/predict', { method: 'POST', body: form });
                  const p = await readProblem(r);
                  return [p.status, p.type, problemMessage(p, { model: 'imagenet' })];
                }""",
                base64.b64encode((photos / CAT).read_bytes()).decode(),
            )
        finally:
            context.close()
    status, ptype, msg = message
    assert status == 503 and ptype.endswith("/deadline-exceeded"), message
    assert msg["title"] == "Server busy" and "warming up" not in msg["text"], msg


def test_a_first_visit_starts_on_the_model_that_knows_the_most_labels(
    open_page: Any, api: httpx.Client
) -> None:
    """'What's in your picture?' on a first visit used the alphabetically first model (with the
    shipped bundles: bird / not-bird); now the widest one (imagenet, 1,000 labels)."""
    # Asked now, not through the session `models` fixture: that list would miss the models
    # taught by later tests.
    models = api.get("/v1/models").json()["models"]
    widest = max(models, key=lambda m: m["num_classes"])
    assert widest["num_classes"] > min(m["num_classes"] for m in models)
    page = open_page()  # a fresh browser context: nothing remembered
    assert page.locator("#model-select").input_value() == widest["name"]
    page.select_option("#model-select", models[0]["name"])
    page.reload()
    page.wait_for_selector("#model-select:not([disabled])")
    assert page.locator("#model-select").input_value() == models[0]["name"]  # remembered


def test_a_text_file_is_explained_once(open_page: Any, tmp_path: Path) -> None:
    """The card said 'This file isn't an image ... Accepted formats: ...' and then the
    server's 'The upload is text, not an image. Accepted: ...' under it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list, not a picture\n")
    page = open_page()
    page.set_input_files("#file-input", str(notes))
    wait_settled(page, 1)
    error = page.locator("#results > li.result .result-error").inner_text()
    assert "Not an image" in error and "This file is text." in error, error
    assert error.count("Accepted") == 1 and error.lower().count("not an image") == 1, error
