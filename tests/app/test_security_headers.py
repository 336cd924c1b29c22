"""Browser-hardening headers (app/security_headers.py) on every answer: the page, its static
files, JSON, problem+json refusals from routes and from middleware, and the predict hot path."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.security_headers import PAGE_POLICY
from tests.conftest import ROOT, make_settings


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 200).save(buf, format="PNG")
    return buf.getvalue()


def _hardened(r: object, policy: str = PAGE_POLICY) -> None:
    h = r.headers  # type: ignore[attr-defined]
    assert h["x-content-type-options"] == "nosniff", (r, dict(h))
    assert h["content-security-policy"] == policy
    assert h["x-frame-options"] == "SAMEORIGIN"
    assert h["referrer-policy"] == "no-referrer"
    assert len(h.get_list("x-content-type-options")) == 1  # never twice


@pytest.mark.parametrize(
    "path", ["/", "/static/app.js", "/v1/models", "/metrics", "/openapi.json", "/healthz"]
)
def test_every_answer_is_hardened(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200, (path, r.text[:200])
    _hardened(r)


def test_refusals_and_the_predict_hot_path_are_hardened(client: TestClient) -> None:
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    _hardened(missing)
    # Refused by the guard middleware before any route (a cross-site form post).
    r = client.post("/v1/catalogs", content=b"x", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403, r.text
    _hardened(r)
    ok = client.post("/v1/models/tiny/predict", files={"file": ("a.png", _png(), "image/png")})
    assert ok.status_code == 200, ok.text
    _hardened(ok)
    bad = client.post("/v1/models/tiny/predict", content=b"<html><script>x</script>")
    assert bad.status_code in (415, 422) and "html" not in bad.headers["content-type"]
    _hardened(bad)


def test_the_api_docs_are_served_from_here_under_the_page_policy(client: TestClient) -> None:
    """/docs loaded Swagger UI from cdn.jsdelivr.net with inline code, under a policy with only
    the framing rule: blank offline. Now every URL it names is this server's, and it carries
    the page's policy, which names no other origin."""
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    _hardened(r)
    assert "http:" not in PAGE_POLICY and "https:" not in PAGE_POLICY and "*" not in PAGE_POLICY
    html = r.text
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    urls = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "/static/api-docs.js" in urls
    kinds = {".js": "text/javascript", ".css": "text/css"}
    for url in urls:
        if url == "/docs":
            continue
        asset = client.get(url)
        assert asset.status_code == 200, url
        expected = kinds.get(url[url.rfind(".") :])
        if expected:
            assert asset.headers["content-type"].startswith(expected), (url, asset.headers)
        _hardened(asset)
    js = client.get("/static/api-docs.js").text
    assert '"/openapi.json"' in js and "validatorUrl: null" in js
    assert client.get("/static/swagger/swagger-ui-bundle.js").text.count("SwaggerUIBundle") > 0
    # Only the two files the page needs: not the package's own pages with inline scripts.
    for other in ("index.html", "oauth2-redirect.html", "../../__init__.py", "nope.js"):
        r = client.get(f"/static/swagger/{other}")
        assert r.status_code == 404, other
        assert r.headers["content-type"] == "application/problem+json"
    gone = client.get("/redoc")
    assert gone.status_code == 404 and "/docs" in gone.json()["detail"]
    assert client.get("/docs/oauth2-redirect").status_code == 404
    # round 25: an asset's path with a trailing slash was served as the asset
    for slashed in ("/static/app.js/", "/static/index.html/", "/static/swagger/swagger-ui.css/"):
        assert client.get(slashed).status_code == 404, slashed


def test_the_page_needs_nothing_its_policy_forbids(client: TestClient) -> None:
    """The page's markup has no inline script or style (the CSP allows only 'self' files); the
    browser suite (tests/browser) checks a full session leaves the console free of violations."""
    html = client.get("/").text
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert 'type="module" src="/static/' in html
    scripts = sorted(p.name for p in (ROOT / "app" / "static").glob("*.js"))
    assert "app.js" in scripts and "teach.js" in scripts
    for name in scripts:  # every module the page may load (round 28: the page was split)
        js = client.get(f"/static/{name}").text
        assert 'createElement("style")' not in js and "eval(" not in js, name


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/docs", "/static/swagger/swagger-ui.css"])
def test_page_assets_ignore_ranges_and_answer_conditional_requests(
    client: TestClient, path: str
) -> None:
    """Round 16: a malformed or unsatisfiable Range got a text/plain 400 or 416, and `/`
    ignored If-None-Match. Ranges are ignored now (RFC 9110 14.2); both answer 304."""
    whole = client.get(path)
    assert whole.status_code == 200 and whole.headers["etag"]
    for rng in ("bytes=9-0", "items=0-5", "bytes=999999-", "bytes=0-3"):
        r = client.get(path, headers={"Range": rng})
        assert r.status_code == 200 and r.content == whole.content, (rng, r.status_code)
    again = client.get(path, headers={"If-None-Match": whole.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert whole.headers["content-type"].startswith(
        "text/html" if path in ("/", "/docs") else "text/"
    )
    missing = client.get("/static/nope.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_api_answers_are_not_stored_by_caches(client: TestClient) -> None:
    """Round 26: no API answer said how to cache it, so a cache applying a default lifetime
    could serve stale model lists, jobs or metrics."""
    for path in ("/v1/models", "/metrics", "/healthz", "/v1/models/nope", "/v2/models/tiny"):
        r = client.get(path)
        assert r.headers["cache-control"] == "no-store", (path, dict(r.headers))
        assert "vary" not in r.headers or "X-API-Key" not in r.headers["vary"]  # no key set
    r = client.post("/v1/models/tiny/predict", files={"file": ("a.png", _png(), "image/png")})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    static = client.get("/static/app.js")  # a validator: a cache may keep it and ask again
    assert "no-store" not in static.headers["cache-control"]


def test_with_a_key_answers_are_private_and_vary_on_it(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """RFC 9111 3.5 keeps shared caches from storing answers to requests with Authorization,
    not X-API-Key: with a key configured, what a key holder is shown (refused bundles' paths
    and reasons) must not be stored for, or served to, another client."""
    settings = make_settings(tiny_models_dir, tmp_path, api_key="sekrit")
    with TestClient(create_app(settings)) as keyed:
        for headers in ({}, {"X-API-Key": "sekrit"}):
            r = keyed.get("/v1/models", headers=headers)
            assert r.headers["cache-control"] == "private, no-store"
            assert r.headers.get_list("vary") == ["X-API-Key, Authorization"]
        r = keyed.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
        assert r.headers["cache-control"].startswith("private")
        assert len(r.headers.get_list("vary")) == 1 and "X-API-Key" in r.headers["vary"]


def test_cross_origin_pages_can_read_where_things_are_and_when_to_retry(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """Round 26: with IMGCLASS_CORS_ORIGINS set, a page on an allowed origin could not read
    Location (201/202), Retry-After, ETag, Content-Range or X-Request-Id."""
    origin = "https://app.example"
    settings = make_settings(tiny_models_dir, tmp_path, cors_origins=[origin])
    with TestClient(create_app(settings)) as client:
        r = client.get("/v1/models", headers={"Origin": origin})
        exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
        assert {"location", "retry-after", "etag", "content-range", "x-request-id"} <= exposed
