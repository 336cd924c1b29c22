"""A /v1 name that breaks its documented pattern is a 422 giving the pattern, on every route that
takes one, read or write (app/api/name_rules.py). Before round 42 it was a 404 on most reads
(`GET /v1/catalogs/Bad-Name`: "no catalog") and on predict, a 422 on a few writes."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.name_rules import rule_for
from app.main import create_app
from tests.conftest import make_settings

METHODS = ("get", "post", "put", "patch", "delete")
KEY = "s3cret-key-for-tests"
# Values of the right form for the other parameters of a route; any that breaks the pattern.
GOOD = {"name": "shoes", "catalog": "shoes", "item_id": "item1", "job_id": "0123456789abcdef"}
BAD = {"name": ["Bad-Name", "a" * 65, "tiny@"], "catalog": ["Bad-Name", "_x"], "item_id": ["-x"]}
# Job ids are the server's own (16 hex digits today), never a client's choice: no pattern is
# promised for them, so one that is not a job's is its 404.
UNPATTERNED = {("/v1/jobs/{job_id}", "job_id")}


def _document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        doc: dict[str, Any] = create_app(make_settings(Path(tmp), Path(tmp))).openapi()
    return doc


DOCUMENT = _document()
PATH_PARAMS = [
    (method.upper(), path, param)
    for path, item in DOCUMENT["paths"].items()
    if path.startswith("/v1/")
    for method, op in item.items()
    if method in METHODS
    for param in op.get("parameters", [])
    if param["in"] == "path"
]


def _pattern(param: dict[str, Any]) -> str | None:
    schema = param["schema"]
    return next((b.get("pattern") for b in schema.get("anyOf", [schema]) if "pattern" in b), None)


CASES = [
    pytest.param(method, path, param["name"], bad, _pattern(param), id=f"{method} {path} {bad}")
    for method, path, param in PATH_PARAMS
    if (path, param["name"]) not in UNPATTERNED
    for bad in BAD[param["name"]]
    if not (bad == "tiny@" and not path.startswith("/v1/models/"))
]


@pytest.fixture(scope="module")
def client(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_models_dir, tmp_path_factory.mktemp("nr")))) as c:
        assert c.post("/v1/catalogs", json={"name": "shoes", "model": "tiny"}).status_code == 201
        yield c


def test_every_v1_path_parameter_has_a_pattern_the_server_applies_or_is_named_here() -> None:
    """The document's pattern is the rule the server checks (one table: NAME_RULES)."""
    assert len(PATH_PARAMS) >= 20
    unpatterned = {(path, p["name"]) for _, path, p in PATH_PARAMS if _pattern(p) is None}
    assert unpatterned == UNPATTERNED
    for _, path, param in PATH_PARAMS:
        rule = rule_for("path", param["name"], path)
        assert (rule and rule.pattern.pattern) == _pattern(param), (path, param["name"])


@pytest.mark.parametrize(("method", "path", "name", "bad", "pattern"), CASES)
def test_a_name_that_breaks_its_documented_pattern_is_a_422_giving_it(
    client: TestClient, method: str, path: str, name: str, bad: str, pattern: str
) -> None:
    url = path.format(**{**GOOD, name: bad})
    r = client.request(method, url)
    assert r.status_code == 422, (url, r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert pattern in body["detail"], body
    assert body["errors"][0]["loc"] == ["path", name], body


@pytest.mark.parametrize(
    ("method", "url", "where"),
    [
        ("POST", "/v1/models/tiny/predict?similar=1&catalog=Bad", "catalog"),
        ("POST", "/v1/catalogs/shoes/search?item_id=-x", "item_id"),
        ("POST", "/v1/catalogs/shoes/items?id=-x", "id"),
    ],
)
def test_a_query_name_that_breaks_its_documented_pattern_is_a_422(
    client: TestClient, method: str, url: str, where: str
) -> None:
    """`?catalog=Bad` on predict and `?item_id=-x` on search were 404s ("no such catalog")."""
    r = client.request(method, url)
    assert r.status_code == 422, (url, r.status_code, r.text)
    body = r.json()
    assert body["errors"][0]["loc"] == ["query", where], body
    assert "pattern ^" in body["detail"], body


def test_the_key_check_comes_before_the_name(tiny_models_dir: Path, tmp_path: Path) -> None:
    """A keyless request to a keyed route is told about the key, not the name; with the key,
    the malformed name is a 422 (it was a 404) on the predict hot path too."""
    settings = make_settings(tiny_models_dir, tmp_path, api_key=KEY, api_key_for_reads=True)
    with TestClient(create_app(settings), base_url="http://localhost") as c:
        for method, url in (
            ("GET", "/v1/catalogs/Bad-Name"),
            ("DELETE", "/v1/catalogs/Bad-Name"),
            ("POST", "/v1/models/Bad-Name/predict"),
            ("GET", "/v1/models/Bad-Name/download?x=1"),
        ):
            r = c.request(method, url)
            assert r.status_code == 401 and "pattern" not in r.text, (url, r.text)
            r = c.request(method, url, headers={"X-API-Key": KEY})
            assert r.status_code == 422 and "pattern" in r.json()["detail"], (url, r.text)
