"""The predict hot path (app.api.hotpath: the app's own middleware, then a plain handler, past
Starlette's stack, router and FastAPI's parameter machinery) behaves exactly like the full stack
and the FastAPI route it shadows: same results, same problems, same guards, same docs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from app.api.predict import predict_route
from app.main import create_app
from tests.conftest import make_settings
from tests.images import fashion_png

QUERIES = [
    "",
    "?top_k=3",
    "?top_k=3&top_k=2",  # 422 on both: a parameter given twice (the last one used to win)
    "?top_k=0",
    "?top_k=1001",
    "?top_k=abc",
    "?similar=0",
    "?similar=101",
    "?unknown=1&top_k=2",
    "?catalog=anything",  # without similar=: 422 on both paths
]


@pytest.fixture(scope="module")
def both(
    tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, TestClient]]:
    hot_app = create_app(make_settings(tiny_models_dir, tmp_path_factory.mktemp("hot")))
    declared_app = create_app(make_settings(tiny_models_dir, tmp_path_factory.mktemp("declared")))
    declared_app.router.routes.remove(predict_route)
    assert hot_app.router.routes[0] is predict_route

    async def full_stack(scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own dispatch: every middleware, the router, the declared route."""
        await FastAPI.__call__(declared_app, scope, receive, send)

    with TestClient(hot_app) as hot, TestClient(declared_app):
        yield hot, TestClient(full_stack)


def _comparable(body: dict) -> dict:  # type: ignore[type-arg]
    """Drop what differs between any two calls (timings)."""

    def drop(value: object) -> object:
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if k not in ("timings", "timings_ms")}
        if isinstance(value, list):
            return [drop(v) for v in value]
        return value

    out = drop(body)
    assert isinstance(out, dict)
    return out


@pytest.mark.parametrize("query", QUERIES)
def test_hot_route_answers_like_the_declared_route(
    both: tuple[TestClient, TestClient],
    fashion_mnist,
    query: str,  # type: ignore[no-untyped-def]
) -> None:
    hot, declared = both
    data = fashion_png(fashion_mnist.x_test[0])
    a = hot.post(f"/v1/models/tiny/predict{query}", content=data)
    b = declared.post(f"/v1/models/tiny/predict{query}", content=data)
    assert a.status_code == b.status_code
    assert a.headers["content-type"] == b.headers["content-type"]
    assert _comparable(a.json()) == _comparable(b.json())
    assert a.headers["x-request-id"] and b.headers["x-request-id"]
    if a.status_code == 422:
        assert a.headers["content-type"] == "application/problem+json"
        assert a.json()["errors"][0]["loc"][0] == "query"


def test_unknown_model_and_missing_key_match(tiny_models_dir: Path, tmp_path: Path) -> None:
    settings = make_settings(tiny_models_dir, tmp_path, api_key="k" * 32, api_key_for_reads=True)
    with TestClient(create_app(settings)) as c:
        no_key = c.post("/v1/models/tiny/predict", content=b"x")
        assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "ApiKey"
        unknown = c.post("/v1/models/nope/predict", content=b"x", headers={"X-API-Key": "k" * 32})
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"


def test_openapi_still_documents_predict(both: tuple[TestClient, TestClient]) -> None:
    hot, _ = both
    op = hot.get("/openapi.json").json()["paths"]["/v1/models/{name}/predict"]["post"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"name", "top_k", "similar", "catalog"}
    top_k = params["top_k"]["schema"]["anyOf"][0]
    assert (top_k["minimum"], top_k["maximum"]) == (1, 1000)
    assert "requestBody" in op


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/v1/models/nope/predict", {}, b"x"),  # unknown model: 404
        ("/v1/models/tiny/predict", {}, b"not an image"),  # 415
        ("/v1/models/tiny/predict", {"Origin": "https://evil.example"}, b"x"),  # guard: 403
        ("/v1/models/tiny/predict", {"Host": "rebind.example"}, b"x"),  # guard: 400
        ("/v1/models/tiny/predict", {"Content-Type": "multipart/form-data"}, b"x"),  # 400
    ],
)
def test_refusals_match_the_full_stack(
    both: tuple[TestClient, TestClient], path: str, headers: dict[str, str], body: bytes
) -> None:
    hot, declared = both
    a = hot.post(path, content=body, headers=headers)
    b = declared.post(path, content=body, headers=headers)
    assert 400 <= a.status_code < 500
    assert (a.status_code, a.headers["content-type"]) == (b.status_code, b.headers["content-type"])
    assert a.headers["content-type"] == "application/problem+json"
    assert a.json() == b.json()


def test_hot_path_is_counted_under_the_route_template(both: tuple[TestClient, TestClient]) -> None:
    hot, _ = both
    hot.post("/v1/models/nope/predict", content=b"x")
    text = hot.get("/metrics").text
    assert 'route="/v1/models/{name}/predict"' in text
    assert "/v1/models/nope/predict" not in text


def test_cors_applies_on_the_hot_path(tiny_models_dir: Path, tmp_path: Path, fashion_mnist) -> None:  # type: ignore[no-untyped-def]
    """With IMGCLASS_CORS_ORIGINS set, a listed site's predict is answered with its CORS
    header (the hot path runs the same CORSMiddleware), an unlisted one is refused."""
    settings = make_settings(tiny_models_dir, tmp_path, cors_origins=["https://ok.example"])
    data = fashion_png(fashion_mnist.x_test[0])
    with TestClient(create_app(settings)) as c:
        ok = c.post(
            "/v1/models/tiny/predict", content=data, headers={"Origin": "https://ok.example"}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://ok.example"
        other = c.post(
            "/v1/models/tiny/predict", content=data, headers={"Origin": "https://evil.example"}
        )
        assert other.status_code == 403
        assert "access-control-allow-origin" not in other.headers
        # A preflight from an unlisted site is refused as problem+json (it was text/plain).
        pre = c.options(
            "/v1/models/tiny/predict",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert pre.status_code == 400
        assert pre.headers["content-type"].startswith("application/problem+json")
        assert "origin" in pre.json()["detail"] and "IMGCLASS_CORS_ORIGINS" in pre.json()["detail"]
        listed = c.options(
            "/v1/models/tiny/predict",
            headers={"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"},
        )
        assert listed.status_code == 200
        assert listed.headers["access-control-allow-origin"] == "https://ok.example"
