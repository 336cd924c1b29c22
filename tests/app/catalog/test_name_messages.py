"""Catalog names in plain words: a bad name says the rule (it showed pydantic's raw regex), and
an unknown name's 404 lists the catalogs there are, as an unknown model's 404 does."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.catalog.embedded import EmbeddedStore
from app.catalog.index import IndexConfig
from app.catalog.types import CatalogNotFound, missing_catalog
from app.main import create_app
from tests.app.catalog.conftest import model_ref
from tests.conftest import ROOT, make_settings

RULE = "use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit."


def test_a_bad_catalog_name_is_a_plain_sentence_and_an_unknown_one_lists_the_catalogs(
    tmp_path: Path,
) -> None:
    settings = make_settings(ROOT / "models", tmp_path, enabled_models=["products"])
    with TestClient(create_app(settings)) as c:
        for name in ("Shoes!", "-x", "x" * 65):
            r = c.post("/v1/catalogs", json={"name": name, "model": "products"})
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
            detail = r.json()["detail"]
            assert detail.startswith(f"Invalid catalog name {name!r}: {RULE}"), detail
            assert "pattern" not in detail and "^[a-z0-9]" not in detail
        r = c.post("/v1/catalogs", json={"name": "x" * 5000, "model": "products"})
        assert r.status_code == 422 and len(r.json()["detail"]) < 300, r.text  # name cut
        r = c.get("/v1/catalogs/nope")
        assert (
            r.status_code == 404
            and r.json()["detail"] == "No catalog named 'nope'. Catalogs: none."
        )
        for name in ("shoes", "bags"):
            r = c.post("/v1/catalogs", json={"name": name, "model": "products"})
            assert r.status_code == 201, r.text
        for path in ("/v1/catalogs/nope", "/v1/catalogs/nope/items"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["type"].endswith("catalog-not-found")
            assert r.json()["detail"] == "No catalog named 'nope'. Catalogs: bags, shoes.", r.text


def test_the_list_is_capped_and_sorted(tmp_path: Path) -> None:
    err = missing_catalog("nope", [f"c{i:02d}" for i in range(25, 0, -1)])
    assert isinstance(err, CatalogNotFound) and err.extra == {"catalog": "nope"}
    shown = ", ".join(f"c{i:02d}" for i in range(1, 21))
    assert err.detail == (
        f"No catalog named 'nope'. Catalogs: {shown} and 5 more (GET /v1/catalogs lists them)."
    )
    store = EmbeddedStore(tmp_path, IndexConfig())
    store.open()
    try:
        store.create_catalog("one", model_ref())
        with pytest.raises(CatalogNotFound) as raised:
            store.get_catalog("two")
        assert raised.value.detail == "No catalog named 'two'. Catalogs: one."
    finally:
        store.close()
