"""The server status pill says "Offline" only when the server does not answer /readyz (real
Chromium, real server). One Teach request that got no answer (a blip), or that got a 4xx/5xx
problem (an answer: the server is up), turned it "Offline" at once, for seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.app.teach.conftest import write_sneakers_and_bags
from tests.browser.conftest import fill_teach_form

pytestmark = pytest.mark.browser

# Every state the pill shows from now on, as "state:text".
WATCH_PILL = """() => {
  const pill = document.querySelector('#server-status');
  const seen = (window.pillSeen = []);
  const note = () => seen.push(`${pill.dataset.state}:${pill.textContent.trim()}`);
  new MutationObserver(note).observe(pill, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}"""

UNAVAILABLE = {
    "type": "https://imgclass.dev/problems/storage-unavailable",
    "title": "Storage unavailable",
    "status": 503,
    "detail": "The data folder cannot be written.",
}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return write_sneakers_and_bags(tmp_path_factory.mktemp("pill"), 2)


def ready_teach_form(open_page: Any, pictures: dict[str, list[Path]], model: str) -> Any:
    page = open_page()
    page.wait_for_selector("#server-status[data-state='ready']")
    fill_teach_form(page, model, {k: [str(p) for p in v] for k, v in pictures.items()})
    page.locator('#teach .teach-count:text-is("2 pictures")').nth(1).wait_for()
    page.evaluate(WATCH_PILL)
    return page


def pill_seen(page: Any) -> list[str]:
    return list(page.evaluate("window.pillSeen"))


@pytest.mark.parametrize("failure", ["no answer", "503 problem"])
def test_one_failed_teach_request_does_not_say_offline(
    open_page: Any, pictures: dict[str, list[Path]], failure: str
) -> None:
    page = ready_teach_form(open_page, pictures, f"pill-{failure.split()[0]}")

    def fail(route: Any) -> None:
        if failure == "no answer":
            route.abort("connectionreset")
        else:
            body = json.dumps(UNAVAILABLE)
            route.fulfill(status=503, content_type="application/problem+json", body=body)

    page.route("**/v1/catalogs", fail)
    page.click("#teach-train")
    error = page.locator("#teach .teach-error")
    error.wait_for()
    page.unroute("**/v1/catalogs")
    if failure == "no answer":
        assert "reach the server" in error.inner_text(), error.inner_text()
        # /readyz answers (3 s later): Teach's "Can't reach the server" is cleared.
        error.wait_for(state="hidden", timeout=8000)
    else:
        assert "data folder" in error.inner_text(), error.inner_text()
        page.wait_for_timeout(4000)  # as long as a recheck would take
        assert error.is_visible()
    assert not [s for s in pill_seen(page) if s.startswith("down")], pill_seen(page)
    assert page.locator("#server-status").get_attribute("data-state") == "ready"


def test_a_teach_request_with_the_server_gone_says_offline_until_it_answers(
    open_page: Any, pictures: dict[str, list[Path]]
) -> None:
    page = ready_teach_form(open_page, pictures, "pill-gone")
    gone = lambda route: route.abort("internetdisconnected")  # noqa: E731
    page.route("**/v1/catalogs", gone)
    page.route("**/readyz", gone)
    page.click("#teach-train")
    page.locator("#teach .teach-error").wait_for()
    page.wait_for_selector("#server-status[data-state='down']", timeout=6000)
    assert page.locator("#server-status").inner_text().strip() == "Offline"
    page.unroute("**/v1/catalogs")
    page.unroute("**/readyz")
    page.wait_for_selector("#server-status[data-state='ready']", timeout=8000)
    page.locator("#teach .teach-error").wait_for(state="hidden")
