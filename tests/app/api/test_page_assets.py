"""The page's own files (app/api/page_assets.py): revalidated on every use, no range promise,
and the preconditions StaticFiles leaves out (If-Match, If-Unmodified-Since) answered."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow  # a live server (round 29: the fast subset in 2 min)

PATHS = ["/", "/static/app.js", "/docs", "/static/swagger/swagger-ui.css", "/favicon.ico"]


@pytest.mark.parametrize("path", PATHS)
def test_page_assets_say_no_cache_and_promise_no_ranges(client: TestClient, path: str) -> None:
    """Ranges are ignored, yet `Accept-Ranges: bytes` was sent; without `no-cache` a browser
    could run a cached app.js of the old version against a new index.html after an upgrade."""
    for r in (client.get(path), client.head(path)):
        assert r.status_code == 200, r.status_code
        assert "accept-ranges" not in r.headers, dict(r.headers)
        assert r.headers["cache-control"] == "no-cache"
    again = client.get(path, headers={"If-None-Match": client.get(path).headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"
    assert "accept-ranges" not in again.headers


def _refused(r: httpx.Response) -> None:
    assert r.status_code == 412, r.status_code
    assert r.headers["content-type"] == "application/problem+json"
    if r.request.method == "GET":  # a HEAD answer has no body
        assert r.json()["type"] == "/problems/precondition-failed"


@pytest.mark.parametrize("path", PATHS)
def test_page_assets_evaluate_if_match_and_if_unmodified_since(
    client: TestClient, path: str
) -> None:
    """RFC 9110 13.1.1 and 13.1.4: StaticFiles sent 200 whatever they said."""
    whole = client.get(path)
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    for ok in (etag, "*", f'"other", {etag}'):
        r = client.get(path, headers={"If-Match": ok})
        assert r.status_code == 200 and r.content == whole.content, ok
    for stale in ('"other"', f"W/{etag}"):  # If-Match compares strongly
        _refused(client.get(path, headers={"If-Match": stale}))
    _refused(client.head(path, headers={"If-Match": '"other"'}))
    # If-Match first (RFC 9110 13.2.2): a matching If-None-Match does not turn it into a 304.
    _refused(client.get(path, headers={"If-Match": '"other"', "If-None-Match": etag}))
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    _refused(client.get(path, headers={"If-Unmodified-Since": old}))
    asctime = "Sun Nov  6 08:49:37 1994"  # the obsolete form names no zone: GMT
    _refused(client.get(path, headers={"If-Unmodified-Since": asctime}))
    # not HTTP-dates, so ignored (round 26 attack: a date without GMT or with +0100 counted)
    not_http = ("Sun, 06 Nov 1994 08:49:37", "Thu, 01 Jan 1970 00:00:00 +0100")
    for fine in (modified, "Fri, 01 Jan 2100 00:00:00 GMT", "not a date", *not_http):
        r = client.get(path, headers={"If-Unmodified-Since": fine})
        assert r.status_code == 200, fine
    # With If-Match, If-Unmodified-Since is not evaluated (13.1.4).
    r = client.get(path, headers={"If-Match": etag, "If-Unmodified-Since": old})
    assert r.status_code == 200
    # Conditions never turn another answer into a 412 (13.2.1).
    assert client.get("/static/nope.js", headers={"If-Match": '"x"'}).status_code == 404


def test_favicon_ico_is_the_pages_icon(client: TestClient) -> None:
    """Round 27: opening /v1/models or /readyz from the page's footer logged a 404 for the
    icon browsers ask for; it is the page's SVG icon, with its own type."""
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    assert r.content == client.get("/static/favicon.svg").content
