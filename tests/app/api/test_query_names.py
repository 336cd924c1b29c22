"""Unknown query parameters are a 422, but never before the route's own key check: a keyed
server answered a keyless `GET /v1/models?x=1` with a 422 that listed the route's parameters
(round 41)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings

KEY = "s3cret-key-for-tests"


def test_a_keyless_read_with_an_unknown_parameter_is_a_401(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(tiny_models_dir, tmp_path, api_key=KEY, api_key_for_reads=True)
    with TestClient(create_app(settings), base_url="http://localhost") as c:
        for method, path in (
            ("GET", "/v1/models?bogus=1"),
            ("POST", "/v1/preview?bogus=1"),
            ("GET", "/v1/catalogs?bogus=1"),
        ):
            r = c.request(method, path, content=b"x")
            assert r.status_code == 401, (path, r.status_code, r.text)
            assert "bogus" not in r.text
        r = c.get("/v1/models?bogus=1", headers={"X-API-Key": KEY})
        assert r.status_code == 422 and "bogus" in r.text


def test_a_keyless_write_with_an_unknown_parameter_is_a_401_when_reads_are_open(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(tiny_models_dir, tmp_path, api_key=KEY)
    with TestClient(create_app(settings), base_url="http://localhost") as c:
        assert c.get("/v1/models?bogus=1").status_code == 422  # reads are open: named at once
        r = c.post("/v1/catalogs?bogus=1", json={"name": "c", "model": "tiny"})
        assert r.status_code == 401, r.text
        r = c.post(
            "/v1/catalogs?bogus=1", json={"name": "c", "model": "tiny"}, headers={"X-API-Key": KEY}
        )
        assert r.status_code == 422 and "bogus" in r.text


def _v2_operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        if path.startswith("/v2")
        for method in item
        if method in ("get", "post")
    ]


def test_v2_answers_an_unknown_query_parameter_with_a_400_naming_it(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """The Open Inference Protocol defines no query parameter and neither tritonclient nor the
    KServe SDK sends one: `/v2/models/tiny/infer?binary_data_output=true` (meant for the body)
    was answered as if it were absent. Now a 400 in the protocol's shape, after the key check
    (round 42); the document lists none (`version` was a query parameter of the routes
    without /versions/)."""
    settings = make_settings(tiny_models_dir, tmp_path, api_key=KEY, api_key_for_reads=True)
    with TestClient(create_app(settings), base_url="http://localhost") as c:
        document = c.get("/openapi.json").json()
        operations = _v2_operations(document)
        assert len(operations) == 9
        for method, path in operations:
            url = path.format(name="tiny", version="1") + "?binary_data_output=true"
            r = c.request(method, url, headers={"X-API-Key": KEY})
            assert r.status_code == 400, (url, r.status_code, r.text)
            assert r.json() == {
                "error": "query.binary_data_output: not a parameter of this route; "
                "it takes no query parameters"
            }
            params = document["paths"][path][method.lower()].get("parameters", [])
            assert all(p["in"] == "path" for p in params), (path, params)
        r = c.get("/v2/models/tiny?version=1", headers={"X-API-Key": KEY})
        assert r.status_code == 400 and "query.version" in r.json()["error"]
        # the key check first; no query at all, or an empty one, is fine; an unknown route
        # stays a 404
        r = c.get("/v2/models/tiny?bogus=1")
        assert r.status_code == 401 and "bogus" not in r.text, r.text
        assert c.get("/v2/models/tiny/ready?", headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/v2/health/live?probe=1").status_code == 400  # no key: none is needed
        assert c.get("/v2/nowhere?x=1", headers={"X-API-Key": KEY}).status_code == 404
