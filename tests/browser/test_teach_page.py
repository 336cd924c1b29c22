"""The Teach flow in real Chromium: name a model, add two classes of real Fashion-MNIST test
images, train on the server, read the held-out results, then try the new model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.app.teach.conftest import fm_test_split, png, write_sneakers_and_bags
from tests.browser.conftest import PHONE, fill_teach_form

pytestmark = pytest.mark.browser
SHOTS = Path("/tmp/shots")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("teach-pictures")
    files = write_sneakers_and_bags(out, 13)
    x, _ = fm_test_split()
    broken = out / "broken.png"
    broken.write_bytes(png(x[0])[:70])  # a truncated PNG: the server refuses it (422)
    files["broken"] = [broken]
    return files


def teach_flow(page: Any, model: str, pictures: dict[str, list[Path]], shot: str) -> None:
    page.locator("#teach").scroll_into_view_if_needed()
    page.wait_for_function("document.querySelectorAll('#teach-backbone option').length > 0")
    page.fill("#teach-name", model)
    page.select_option("#teach-backbone", "products")
    classes = page.locator("#teach .teach-class")
    assert classes.count() == 2
    for i, label in enumerate(("sneaker", "bag")):
        card = classes.nth(i)
        card.locator(".teach-class-name").fill(label)
        files = [str(p) for p in pictures[label][:12]]
        if label == "bag":
            files.append(str(pictures["broken"][0]))  # skipped and listed, not fatal
        card.locator("input[type=file]").set_input_files(files)
        assert card.locator(".teach-thumbs img").count() == len(files)
        assert card.locator(".teach-count").inner_text() == f"{len(files)} pictures"
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"teach-{shot}-before.png"), full_page=True)
    page.click("#teach-train")
    page.wait_for_selector("#teach .teach-results:not([hidden])", timeout=60_000)
    text = page.locator("#teach .teach-results").inner_text()
    assert "sneaker recognised in" in text and "of 12 held-out pictures" in text
    assert "held-out" in text and f"{model} v1 is ready" in text
    assert page.locator("#teach .teach-confusion tbody tr").count() == 2
    assert "Skipped 1 picture(s)" in text and "broken.png" in text
    page.screenshot(path=str(SHOTS / f"teach-{shot}-results.png"), full_page=True)

    page.click("#teach .teach-try")
    page.wait_for_function("m => document.querySelector('#model-select').value === m", arg=model)
    page.set_input_files("#file-input", [str(pictures["bag"][12]), str(pictures["sneaker"][12])])
    page.wait_for_function(
        "document.querySelectorAll('#results > li.result[data-state=\"done\"]').length === 2",
        timeout=30_000,
    )
    tops = page.locator("#results > li.result .preds li").all_inner_texts()
    joined = " ".join(tops)
    assert "bag" in joined and "sneaker" in joined
    page.screenshot(path=str(SHOTS / f"teach-{shot}-try.png"), full_page=True)


def test_teach_create_add_train_predict_desktop(open_page: Any, pictures) -> None:  # type: ignore[no-untyped-def]
    page = open_page()
    teach_flow(page, "shoes-desktop", pictures, "desktop")


def test_teach_at_phone_width(open_page: Any, pictures) -> None:  # type: ignore[no-untyped-def]
    page = open_page(**PHONE)
    teach_flow(page, "shoes-phone", pictures, "phone")
    # Nothing wider than the screen.
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0


def test_a_reload_while_training_picks_the_job_up(open_page: Any, pictures) -> None:  # type: ignore[no-untyped-def]
    page = open_page()
    fill_teach_form(
        page,
        "shoes-reload",
        {label: [str(p) for p in pictures[label][:6]] for label in ("sneaker", "bag")},
    )
    page.click("#teach-train")
    # The job is on the server once the page remembers it; reload at once.
    page.wait_for_function("sessionStorage.getItem('imgclass.teach.job') !== null", timeout=60_000)
    page.reload()
    page.wait_for_selector("#teach .teach-results:not([hidden])", timeout=60_000)
    text = page.locator("#teach .teach-results").inner_text()
    assert "shoes-reload v1 is ready" in text and "of 6 held-out pictures" in text
    assert page.input_value("#teach-name") == "shoes-reload"
    assert page.input_value("#teach-backbone") == "products"  # what the job was built on
    assert page.evaluate("sessionStorage.getItem('imgclass.teach.job')") is None
    page.screenshot(path=str(SHOTS / "teach-reload-results.png"), full_page=True)
    # Shown once: a second reload starts clean.
    page.reload()
    page.wait_for_function("document.querySelectorAll('#teach-backbone option').length > 0")
    assert page.locator("#teach .teach-results").is_hidden()
