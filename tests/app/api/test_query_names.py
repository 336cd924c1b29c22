"""Unknown query parameters are a 422, but never before the route's own key check: a keyed
server answered a keyless `GET /v1/models?x=1` with a 422 that listed the route's parameters
(round 41)."""

from __future__ import annotations

from pathlib import Path

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
