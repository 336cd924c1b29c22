"""The page asks for the API key when the server needs one, keeps it for the browser session
(sessionStorage, never the URL) and sends it as X-API-Key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.main import create_app
from tests.browser.conftest import DESKTOP, PHONE, _open
from tests.conftest import make_settings
from tests.live_server import serve_in_thread

pytestmark = pytest.mark.browser
KEY = "browser-key-7f3a9c2e"


@pytest.fixture(scope="module")
def keyed_server(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(
        tiny_models_dir,
        tmp_path_factory.mktemp("keyed"),
        api_key=KEY,
        api_key_for_reads=True,
        log_level="WARNING",
    )
    with serve_in_thread(create_app(settings)) as port:
        yield f"http://127.0.0.1:{port}"


def test_key_field_appears_and_the_key_is_kept_for_the_session(
    browser: Any, keyed_server: str, artifacts: Path
) -> None:
    context, page, errors = _open(browser, keyed_server, **DESKTOP)
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("x-api-key"))))
    try:
        page.goto("/")
        field = page.locator("#auth-key")
        field.wait_for(state="visible")
        assert "needs its API key" in field.inner_text()
        assert page.locator("#model-select option[value='tiny']").count() == 0

        page.fill("#auth-key-input", "wrong-key")
        page.click("#auth-key button[type=submit]")
        # round 23: a wrong key showed the first load's text again, as if none had been sent
        page.wait_for_function(
            "document.querySelector('#auth-key .auth-key-note').textContent.includes('not accepted')"
        )
        assert field.is_visible()
        page.screenshot(path=str(artifacts / "desktop-wrong-key.png"))
        assert page.evaluate("sessionStorage.getItem('imgclass.apiKey')") is None

        page.fill("#auth-key-input", KEY)
        page.click("#auth-key button[type=submit]")
        field.wait_for(state="hidden")
        page.wait_for_selector("#model-select option[value='tiny']", state="attached")
        assert page.evaluate("sessionStorage.getItem('imgclass.apiKey')") == KEY
        assert page.evaluate("localStorage.getItem('imgclass.apiKey')") is None

        # A reload in the same tab keeps the key; nothing ever put it in a URL.
        page.reload()
        page.wait_for_selector("#model-select option[value='tiny']", state="attached")
        assert not field.is_visible()
        assert all(KEY not in url for url, _ in sent)
        models = [h for url, h in sent if url.endswith("/v1/models")]
        assert models and models[-1] == KEY

        # Another browser session starts without it.
        other_ctx, other, other_errors = _open(browser, keyed_server, **DESKTOP)
        other.goto("/")
        other.locator("#auth-key").wait_for(state="visible")
        other_ctx.close()
        assert not other_errors, other_errors
    finally:
        context.close()
    assert not errors, errors


@pytest.mark.parametrize(
    ("width", "context_args"),
    [
        (390, PHONE),
        (600, {"viewport": {"width": 600, "height": 900}}),
        (768, {"viewport": {"width": 768, "height": 900}}),
    ],
)
def test_the_key_field_fits_narrow_screens(
    browser: Any,
    keyed_server: str,
    artifacts: Path,
    width: int,
    context_args: dict[str, Any],
) -> None:
    """The field used to make the top bar 575 px wide on a 390 px phone: the page scrolled
    sideways, and the Use key button and the status pill were off screen."""
    context, page, errors = _open(browser, keyed_server, **context_args)
    try:
        page.goto("/")
        page.locator("#auth-key").wait_for(state="visible")
        page.locator("#server-status:not([data-state='unknown'])").wait_for()
        page.screenshot(path=str(artifacts / f"api-key-{width}.png"))
        fit = page.evaluate(
            """() => {
              const right = (sel) => document.querySelector(sel).getBoundingClientRect().right;
              return {scroll: document.documentElement.scrollWidth,
                      client: document.documentElement.clientWidth,
                      button: right('#auth-key button'), pill: right('#server-status'),
                      bar: document.querySelector('.topbar').getBoundingClientRect().height};
            }"""
        )
        assert fit["scroll"] <= fit["client"] == width, fit
        assert fit["button"] <= width and fit["pill"] <= width, fit
        assert fit["bar"] < 140, fit  # the sticky bar leaves the page most of a phone screen
    finally:
        context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def write_keyed_server(
    tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """IMGCLASS_API_KEY set, reads open: the page loads, teaching needs the key."""
    settings = make_settings(
        tiny_models_dir, tmp_path_factory.mktemp("write-keyed"), api_key=KEY, log_level="WARNING"
    )
    with serve_in_thread(create_app(settings)) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(("width", "context_args"), [(1280, DESKTOP), (390, PHONE)])
def test_train_without_the_key_points_to_the_key_field(
    browser: Any,
    write_keyed_server: str,
    artifacts: Path,
    tmp_path: Path,
    width: int,
    context_args: dict[str, Any],
) -> None:
    """Train without a key showed the API's own 401 text ("send it once, as 'X-API-Key: <key>'
    or 'Authorization: Bearer <key>'"), written for API clients. The page now says where its
    key field is, marks that field and puts the cursor in it."""
    pictures = []
    for i in range(4):
        path = tmp_path / f"p{i}.png"
        Image.new("L", (28, 28), 40 + 50 * i).save(path)
        pictures.append(str(path))
    context, page, errors = _open(browser, write_keyed_server, **context_args)
    try:
        page.goto("/")
        field = page.locator("#auth-key")
        field.wait_for(state="visible")
        assert "add or change data" in field.inner_text()
        page.locator("#teach").scroll_into_view_if_needed()
        page.locator("#teach-backbone option").first.wait_for(state="attached")
        page.fill("#teach-name", "keyless")
        classes = page.locator("#teach .teach-class")
        for i, label in enumerate(("dark", "light")):
            classes.nth(i).locator(".teach-class-name").fill(label)
            classes.nth(i).locator("input[type=file]").set_input_files(pictures[2 * i : 2 * i + 2])
            classes.nth(i).locator('.teach-count:text-is("2 pictures")').wait_for()
        page.click("#teach-train")
        error = page.locator("#teach .teach-error")
        error.wait_for(state="visible")
        text = error.inner_text()
        assert "This server needs an API key" in text, text
        assert "API key field at the top" in text, text
        assert "X-API-Key" not in text and "send it once" not in text, text
        assert page.evaluate("document.activeElement.id") == "auth-key-input"
        assert "auth-key-attention" in (field.get_attribute("class") or "")
        # Both in view: the message (scrolled to) and the field (in the sticky top bar).
        for seen in (field, error):
            box, height = seen.bounding_box(), page.viewport_size["height"]
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= height, (seen, box)
        page.screenshot(path=str(artifacts / f"train-needs-key-{width}.png"))
        page.keyboard.type(KEY)  # the cursor is in the field
        assert "auth-key-attention" not in (field.get_attribute("class") or "")
        page.keyboard.press("Enter")
        field.wait_for(state="hidden")
        error.wait_for(state="hidden")  # resolved: the key is in (round 27)
    finally:
        context.close()
    assert not errors, errors


@pytest.mark.parametrize(("width", "context_args"), [(1280, DESKTOP), (390, PHONE)])
def test_a_server_that_needs_the_key_for_reads_says_so_until_it_has_it(
    browser: Any,
    keyed_server: str,
    artifacts: Path,
    tmp_path: Path,
    width: int,
    context_args: dict[str, Any],
) -> None:
    """Round 27: the model list said "Loading models..." under a green "Ready" pill; adding a
    picture hid the key alert and said "No model ready yet"; the teach "Built on" list asked
    /v1/models every 3 s, each time refused."""
    picture = tmp_path / "p.png"
    Image.new("L", (28, 28), 90).save(picture)
    context, page, errors = _open(browser, keyed_server, **context_args)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/v1/models") else None)
    try:
        page.goto("/")
        page.locator("#auth-key").wait_for(state="visible")
        page.wait_for_selector("#server-status[data-state='locked']")
        assert page.locator("#server-status").inner_text().strip() == "API key needed"
        select = page.locator("#model-select")
        assert select.is_disabled() and select.inner_text().strip() == "API key needed"
        alert = page.locator("#alert")
        assert alert.is_visible() and "needs an API key" in alert.inner_text()
        assert "API key needed" in page.locator("#teach-backbone").inner_text()

        page.set_input_files("#file-input", str(picture))
        card = page.locator("#results > li.result").first
        card.locator(".error-title:text-is('API key needed')").wait_for()
        assert "No model ready yet" not in card.inner_text()
        assert alert.is_visible()  # still there: the key is still missing
        assert page.evaluate("document.activeElement.id") == "auth-key-input"
        page.screenshot(path=str(artifacts / f"reads-need-key-{width}.png"))
        n = len(asked)
        page.wait_for_timeout(7000)  # the "Built on" list asked again every 3 s
        assert len(asked) == n, asked

        page.fill("#auth-key-input", KEY)
        page.press("#auth-key-input", "Enter")
        page.locator("#auth-key").wait_for(state="hidden")
        page.wait_for_selector("#model-select:not([disabled])")
        card.locator(".preds li.top").wait_for()  # the waiting picture is classified now
        assert alert.is_hidden()
        page.wait_for_selector("#server-status[data-state='ready']")
        page.wait_for_selector("#teach-backbone option[value='tiny']", state="attached")
    finally:
        context.close()
    assert not errors, errors
