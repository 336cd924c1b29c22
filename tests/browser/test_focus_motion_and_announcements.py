"""Round 43 check of the page for keyboard and screen-reader use (real Chromium, real server):
focus fell to <body> after Try again, after removing a Teach class and after a failed Train;
dragging files over a Teach class showed "Drop to classify"; placeholders were 3.82:1 in dark
mode; Teach's scrolls were smooth under prefers-reduced-motion; live regions were rewritten on
every keystroke with the same text, and a refused image was announced without its reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.app.teach.conftest import write_sneakers_and_bags
from tests.browser.conftest import fill_teach_form
from tests.browser.test_page_fixes import contrast
from tests.browser.test_teach_fixes import _files_handle
from tests.browser.test_upload_page import FASHION, cards, select_model, wait_settled

pytestmark = pytest.mark.browser

FOCUSED = "() => { const a = document.activeElement; return a && a !== document.body; }"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return write_sneakers_and_bags(tmp_path_factory.mktemp("focus"), 4)


def test_try_again_keeps_focus_on_its_card(open_page: Any, photos: Path) -> None:
    page = open_page()
    select_model(page, "tiny")
    calls = {"n": 0}

    def fail_once(route: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            route.fulfill(status=502, content_type="text/html", body="<h1>502 Bad Gateway</h1>")
        else:
            route.continue_()

    page.route("**/predict*", fail_once)
    page.set_input_files("#file-input", str(photos / FASHION))
    wait_settled(page, 1)
    card = cards(page).first
    card.get_by_role("button", name="Try again").focus()
    page.keyboard.press("Enter")
    wait_settled(page, 1)
    assert card.get_attribute("data-state") == "done"
    assert page.evaluate(FOCUSED), "focus fell to <body>"
    assert card.evaluate("c => c.contains(document.activeElement)")


def test_removing_a_class_moves_focus_to_a_neighbour(open_page: Any) -> None:
    page = open_page()
    page.locator("#teach").scroll_into_view_if_needed()
    add = page.get_by_role("button", name="Add a class")
    add.click()  # three classes
    names = page.locator("#teach .teach-class-name")
    names.nth(2).fill("third")
    page.locator("#teach .teach-remove").nth(1).focus()
    page.keyboard.press("Enter")  # class 2 of 3: the next one (now class 2) takes focus
    assert page.evaluate("document.activeElement.value") == "third"
    page.locator("#teach .teach-remove").nth(1).focus()
    page.keyboard.press("Enter")  # the last one: the one before it
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Name of class 1"
    page.locator("#teach .teach-remove").nth(0).focus()
    page.keyboard.press("Enter")  # none left: Add a class
    assert page.evaluate("document.activeElement.textContent") == "Add a class"


@pytest.mark.parametrize("failure", ["server error", "unreachable"])
def test_a_failed_train_leaves_focus_in_the_form(
    open_page: Any, pictures: dict[str, list[Path]], failure: str
) -> None:
    page = open_page()
    fill_teach_form(
        page, f"focus-{failure.split()[0]}", {k: [str(p) for p in v] for k, v in pictures.items()}
    )
    page.locator('#teach .teach-count:text-is("4 pictures")').nth(1).wait_for()

    def fail(route: Any) -> None:
        if failure == "unreachable":
            route.abort("connectionreset")
        else:
            body = {"type": "about:blank", "title": "Internal Server Error", "status": 500}
            route.fulfill(
                status=500, content_type="application/problem+json", body=json.dumps(body)
            )

    page.route("**/v1/catalogs", fail)
    page.focus("#teach-train")
    page.keyboard.press("Enter")
    error = page.locator("#teach .teach-error")
    error.wait_for()
    page.wait_for_timeout(200)
    where = page.evaluate(
        "() => { const a = document.activeElement;"
        " return a.id || (a.classList.contains('teach-error') ? 'error' : a.tagName); }"
    )
    assert where in ("teach-train", "error"), where


def test_dragging_over_a_class_box_does_not_say_drop_to_classify(
    open_page: Any, pictures: dict[str, list[Path]]
) -> None:
    page = open_page()
    page.locator("#teach").scroll_into_view_if_needed()
    dt = _files_handle(page, pictures["bag"][:1])
    dragging = "document.body.classList.contains('is-dragging')"
    page.locator("#dropzone").dispatch_event("dragenter", {"dataTransfer": dt})
    assert page.evaluate(dragging)  # over the page: the files will be classified
    box = page.locator("#teach .teach-class").first.locator(".teach-drop")
    for event in ("dragenter", "dragover"):
        box.dispatch_event(event, {"dataTransfer": dt})
    assert not page.evaluate(dragging)  # over a class: they go to that class
    assert page.locator("#teach .teach-class").first.evaluate(
        "c => c.classList.contains('is-over')"
    )
    page.locator("#dropzone").dispatch_event("dragenter", {"dataTransfer": dt})
    assert page.evaluate(dragging)
    page.evaluate("window.dispatchEvent(new DragEvent('dragend'))")  # the drag is given up
    assert not page.evaluate(dragging)


# The placeholder's colour against what is really behind its field (translucent layers blended).
PLACEHOLDERS = """() => {
  const rgba = (c) => { const v = c.match(/[\\d.]+/g).map(Number); return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1]; };
  const backdrop = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    // The page's own background under everything (an opaque layer above hides it).
    const probe = document.createElement('span');
    probe.style.color = 'var(--bg)';
    document.body.append(probe);
    let out = rgba(getComputedStyle(probe).color).slice(0, 3);
    probe.remove();
    for (const [r, g, b, a] of layers.reverse()) out = [r * a + out[0] * (1 - a), g * a + out[1] * (1 - a), b * a + out[2] * (1 - a)];
    return out.map(Math.round);
  };
  return [...document.querySelectorAll('input[placeholder], textarea[placeholder]')]
    .filter((e) => e.offsetParent && e.placeholder)
    .map((e) => ({ what: e.placeholder, fg: rgba(getComputedStyle(e, '::placeholder').color), bg: backdrop(e) }));
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_placeholders_reach_4_5_to_1(open_page: Any, scheme: str) -> None:
    page = open_page(color_scheme=scheme)
    page.locator("#model-info summary").click()  # a long label list has a filter field
    fields = page.evaluate(PLACEHOLDERS)
    assert {"Class name", "e.g. my-shoes"} <= {f["what"] for f in fields}, fields
    for f in fields:
        fg = tuple(
            round(c * f["fg"][3] + b * (1 - f["fg"][3]))
            for c, b in zip(f["fg"][:3], f["bg"], strict=True)
        )
        ratio = contrast(fg, tuple(f["bg"]))
        assert ratio >= 4.5, (scheme, f, round(ratio, 2))


# Every scroll the page asks for, with its behaviour.
RECORD_SCROLLS = """() => {
  window.scrolls = [];
  const wrap = (proto, name) => {
    const own = proto[name];
    proto[name] = function (...args) { window.scrolls.push([name, JSON.stringify(args[0] ?? null)]); return own.apply(this, args); };
  };
  wrap(Element.prototype, 'scrollIntoView');
  wrap(Element.prototype, 'scrollTo');
  wrap(window, 'scrollTo');
  wrap(window, 'scrollBy');
}"""


def test_teach_does_not_scroll_smoothly_when_motion_is_reduced(
    open_page: Any, pictures: dict[str, list[Path]]
) -> None:
    page = open_page(reduced_motion="reduce")
    fill_teach_form(page, "still-motion", {k: [str(p) for p in v] for k, v in pictures.items()})
    page.locator('#teach .teach-count:text-is("4 pictures")').nth(1).wait_for()
    page.evaluate(RECORD_SCROLLS)
    page.click("#teach-train")
    page.wait_for_selector("#teach .teach-results:not([hidden])", timeout=60_000)
    page.click("#teach .teach-try")
    page.wait_for_function("() => document.activeElement.id === 'dropzone'")
    scrolls = page.evaluate("window.scrolls")
    assert len(scrolls) >= 2, scrolls  # the results shown, then the drop zone
    assert not [s for s in scrolls if "smooth" in s[1]], scrolls


# What each live region says, each time it is written or shown or hidden.
WATCH_LIVE = """() => {
  window.liveWrites = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      const live = node && node.closest('[aria-live], [role=status], [role=alert]');
      if (live) window.liveWrites.push([live.id || live.className, live.textContent.trim()]);
    }
  }).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['hidden'],
  });
}"""


def test_live_regions_are_written_only_when_what_they_say_changes(
    open_page: Any, pictures: dict[str, list[Path]]
) -> None:
    page = open_page()
    page.locator("#teach").scroll_into_view_if_needed()
    page.wait_for_function("document.querySelectorAll('#teach-backbone option').length > 0")
    page.evaluate(WATCH_LIVE)
    page.locator("#teach-name").press_sequentially("quiet-model")
    classes = page.locator("#teach .teach-class")
    for i, (label, paths) in enumerate(pictures.items()):
        classes.nth(i).locator(".teach-class-name").press_sequentially(label)
        classes.nth(i).locator("input[type=file]").set_input_files([str(p) for p in paths])
        classes.nth(i).locator('.teach-count:text-is("4 pictures")').wait_for()
    writes = page.evaluate("window.liveWrites")
    last: dict[str, str] = {}
    same = []
    for region, text in writes:
        if last.get(region) == text:
            same.append((region, text))
        last[region] = text
    assert not same, same
    assert len(writes) <= 12, writes  # 103 for one form before round 43


def test_a_refused_image_is_announced_with_its_reason(open_page: Any, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    page = open_page()
    select_model(page, "tiny")
    page.set_input_files("#file-input", str(notes))
    wait_settled(page, 1)
    page.wait_for_function("document.querySelector('#sr-status').textContent.includes('classif')")
    said = page.locator("#sr-status").inner_text()
    assert "notes.txt" in said and "not an image" in said.lower(), said
