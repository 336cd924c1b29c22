"""The OpenAPI document declares errors in the shapes they are sent (app/api/openapi.py), and the
name rules it states are the ones the server applies."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
OIP_REF = {"$ref": "#/components/schemas/OipError"}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def client(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_models_dir, tmp_path_factory.mktemp("oa")))) as c:
        yield c


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    doc: dict[str, Any] = client.get("/openapi.json").json()
    return doc


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


# Round 28: these 503s were documented as problem details, but they are the probes' own answer.
OWN_SHAPES = {("/readyz", "503"): "Readiness", ("/v2/health/ready", "503"): "ServerReady"}


def test_every_error_response_names_the_shape_it_is_sent_in(document: dict[str, Any]) -> None:
    seen = 0
    for path, method, op in operations(document):
        oip = path.startswith("/v2")
        assert "default" in op["responses"], (method, path)
        for status, response in op["responses"].items():
            if status != "default" and status[0] not in "45":
                continue
            if (path, status) in OWN_SHAPES:  # not an error: the readiness answer, not ready
                name = OWN_SHAPES[(path, status)]
                ref = {"$ref": f"#/components/schemas/{name}"}
                assert response["content"] == {"application/json": {"schema": ref}}
                continue
            media = "application/json" if oip else "application/problem+json"
            assert response["content"] == {media: {"schema": OIP_REF if oip else PROBLEM_REF}}
            seen += 1
    assert seen > 60
    # FastAPI's own 422 shape is never sent, so it is not documented either
    assert "HTTPValidationError" not in document["components"]["schemas"]


def schema_of(document: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    op = document["paths"][path][method]
    param = next(p for p in op["parameters"] if p["name"] == name)
    schema: dict[str, Any] = param["schema"]
    return next((b for b in schema.get("anyOf", [schema]) if b.get("type") == "string"), schema)


@pytest.mark.parametrize(
    ("name", "valid"),
    [("shoes", True), ("a-b_9", True), ("Shoes", False), ("-x", False), ("x" * 65, False)],
)
def test_the_documented_catalog_name_rule_is_the_servers(
    client: TestClient, document: dict[str, Any], name: str, valid: bool
) -> None:
    pattern = schema_of(document, "/v1/catalogs/{name}", "get", "name")["pattern"]
    assert bool(re.search(pattern, name)) is valid
    r = client.post("/v1/catalogs", json={"name": name, "model": "tiny"})
    assert r.status_code == (201 if valid else 422), r.text
    # a name that breaks the pattern cannot exist: a 422 on reads too (it was a 404, round 42)
    assert client.get(f"/v1/catalogs/{name}").status_code == (200 if valid else 422)


def test_integer_query_parameters_say_they_are_digits_as_the_server_reads_them(
    client: TestClient, document: dict[str, Any]
) -> None:
    """A query is text, and a whole number in it is its digits (`?k=2.0` is a 422, as since
    round 26); only a JSON body's 2.0 is the integer 2, as JSON Schema says. The document said
    `integer` and nothing more (round 42)."""
    seen = 0
    for _path, _method, op in operations(document):
        for param in op.get("parameters", []):
            schema = param["schema"]
            if param["in"] == "query" and "integer" in str(schema):
                assert "Written in digits: 2, not 2.0" in param.get("description", ""), param
                seen += 1
    assert seen >= 6
    client.post("/v1/catalogs", json={"name": "digits", "model": "tiny"})
    r = client.get("/v1/catalogs/digits/items?limit=2.0")
    assert r.status_code == 422 and "limit" in r.json()["detail"], r.text
    assert client.get("/v1/catalogs/digits/items?limit=2").status_code == 200


@pytest.mark.parametrize(("label", "valid"), [("shoe", True), ("", False), ("   ", False)])
def test_the_documented_label_filter_rule_is_the_servers(
    client: TestClient, document: dict[str, Any], label: str, valid: bool
) -> None:
    schema = schema_of(document, "/v1/catalogs/{name}/items", "get", "label")
    documented = len(label) >= schema["minLength"] and bool(re.search(schema["pattern"], label))
    assert documented is valid
    client.post("/v1/catalogs", json={"name": "labels", "model": "tiny"})
    r = client.get("/v1/catalogs/labels/items", params={"label": label})
    assert r.status_code == (200 if valid else 422), r.text


def test_an_error_body_has_the_documented_fields(client: TestClient) -> None:
    r = client.get("/v1/catalogs/Bad-Name")
    assert r.headers["content-type"] == "application/problem+json"
    assert {"type", "title", "status", "detail"} <= set(r.json())
    r = client.get("/v2/models/nope")
    assert r.headers["content-type"].startswith("application/json") and set(r.json()) == {"error"}


def test_v2_infer_documents_its_body(document: dict[str, Any]) -> None:
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        body = document["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == {"application/json", "application/octet-stream"}
    request = document["components"]["schemas"]["InferenceRequest"]
    assert request["required"] == ["inputs"]


def test_answers_that_are_not_errors_and_their_headers_are_documented(
    document: dict[str, Any],
) -> None:
    """Round 28 (a check of 435 answers against this document): 206 ranges, the 200 of an
    upload whose every image was a copy, and the headers clients read (Location, ETag,
    Retry-After, WWW-Authenticate) were not in it."""
    paths = document["paths"]
    for path in (
        "/v1/catalogs/{name}/items/{item_id}/image",
        "/v1/catalogs/{name}/items/{item_id}/thumbnail",
        "/v1/models/{name}/download",
    ):
        answers = paths[path]["get"]["responses"]
        assert "Content-Range" in answers["206"]["headers"], path
        assert "ETag" in answers["200"]["headers"] and "ETag" in answers["304"]["headers"], path
    assert "200" in paths["/v1/catalogs/{name}/items"]["post"]["responses"]
    assert "Location" in paths["/v1/catalogs"]["post"]["responses"]["201"]["headers"]
    assert "Location" in paths["/v1/catalogs/{name}/train"]["post"]["responses"]["202"]["headers"]
    # every catalog route names its catalog {name} (train said {catalog} before)
    assert [p for p in paths if "{catalog}" in p] == []
    for path, method, op in operations(document):
        assert "Retry-After" in op["responses"]["default"]["headers"], (method, path)
    schemas = document["components"]["schemas"]
    shape = schemas["RequestInput"]["properties"]["shape"]
    assert shape["items"]["minimum"] == 1


def test_the_v2_readiness_answer_is_the_documented_shape(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert set(ready.json()) == set(document["components"]["schemas"]["ServerReady"]["properties"])


def test_head_is_documented_wherever_get_is_and_answers_as_documented(
    client: TestClient, document: dict[str, Any]
) -> None:
    """Every GET route answers HEAD (app/api/head.py) but the document listed none, so
    clients generated from it and API checkers treated HEAD as unsupported (round 29)."""
    paths = document["paths"]
    gets = [p for p, item in paths.items() if "get" in item]
    assert gets and all("head" in paths[p] for p in gets)
    assert not [p for p, item in paths.items() if "head" in item and "get" not in item]
    ids = [op.get("operationId") for item in paths.values() for op in item.values()]
    assert len(ids) == len(set(ids))  # the HEAD copies got their own operation ids
    for path in gets:
        head, get = paths[path]["head"], paths[path]["get"]
        assert set(head["responses"]) == set(get["responses"]), path
        assert all("content" not in r for r in head["responses"].values()), path
    # and the server answers HEAD with a documented status and no body
    for url, path in (
        ("/healthz", "/healthz"),
        ("/v1/models", "/v1/models"),
        ("/v1/catalogs/nope", "/v1/catalogs/{name}"),
        ("/v2", "/v2"),
    ):
        r = client.head(url)
        assert str(r.status_code) in paths[path]["head"]["responses"], (url, r.status_code)
        assert r.content == b"", url


def test_the_zip_upload_declares_what_it_answers_as_items_does(document: dict[str, Any]) -> None:
    """A walkthrough found `items:zip` declaring only 200, 404, 413 and 422, while it answers
    401 (key), 409 model-mismatch (a stale catalog, before the body) and 503 (busy, loading),
    and naming its catalog `{catalog}` where the other catalog routes say `{name}`."""
    paths = document["paths"]
    assert "/v1/catalogs/{catalog}/items:zip" not in paths
    op = paths["/v1/catalogs/{name}/items:zip"]["post"]
    assert [p["name"] for p in op["parameters"] if p["in"] == "path"] == ["name"]
    declared = set(op["responses"])
    assert {"200", "401", "404", "409", "413", "422", "503"} <= declared
    items = paths["/v1/catalogs/{name}/items"]["post"]["responses"]
    assert {s for s in items if s[0] in "45"} - {"415"} <= declared
    assert "stale catalog" in op["responses"]["409"]["description"]
