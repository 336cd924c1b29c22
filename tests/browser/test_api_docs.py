"""/docs in Chromium with every other host unreachable and the page's CSP enforced: Swagger UI
(this server's own copy, app/api/api_docs.py) renders the operations, asks nothing of another
host, and Chromium reports no policy violation. It used to load from cdn.jsdelivr.net and stay
blank offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import DESKTOP, PHONE, _open

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(("size", "context_args"), [("1280", DESKTOP), ("390", PHONE)])
def test_docs_render_offline_under_the_page_policy(
    browser: Any, server: str, artifacts: Path, size: str, context_args: dict[str, Any]
) -> None:
    context, page, errors = _open(browser, server, bypass_csp=False, **context_args)
    here = urlsplit(server).netloc
    elsewhere: list[str] = []

    def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == here:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    try:
        page.route("**/*", only_this_server)
        answer = page.goto("/docs")
        assert answer is not None and answer.status == 200
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "http" not in policy
        page.wait_for_selector(".opblock")
        assert page.locator(".opblock").count() >= 10
        assert page.get_by_text("/v1/models/{name}/predict", exact=True).count() >= 1
        predict = page.locator(".opblock", has_text="/v1/models/{name}/predict").first
        predict.locator(".opblock-summary").click()  # the schemas render under the policy too
        predict.locator(".try-out__btn").wait_for()
        assert not page.locator(".errors-wrapper").count()  # "Unable to render this definition"
        page.screenshot(path=str(artifacts / f"api-docs-{size}.png"))
    finally:
        context.close()
    assert not elsewhere, elsewhere
    assert not errors, errors


def test_try_it_out_sends_the_key_typed_on_the_page(browser: Any, server: str) -> None:
    """Round 25: the document declared no API key, so Swagger UI had no Authorize button and
    "Try it out" got 401 on a keyed server. The key is declared (optional: a server without
    one needs none), and /docs starts authorized with the key typed on the page this session."""
    context, page, errors = _open(browser, server, bypass_csp=False, **DESKTOP)
    try:
        page.goto("/")
        page.evaluate("sessionStorage.setItem('imgclass.apiKey', 'the-typed-key')")
        page.goto("/docs")
        page.wait_for_selector(".opblock")
        assert page.locator("button.authorize").count() == 1
        sent = page.evaluate(
            "() => window.ui.authSelectors.authorized().toJS().ApiKey?.value ?? null"
        )
        assert sent == "the-typed-key"
    finally:
        context.close()
    assert not errors, errors
