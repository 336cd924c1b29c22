"""The 2-per-class rule counts distinct pictures: a class that is one picture added twice is
refused like a class of one picture (it was taught and reported 1.000 held-out accuracy, each
copy scored by a head fitted on the other)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from app.catalog.service import CatalogService
from app.main import create_app
from app.teach.errors import NotEnoughExamples
from app.teach.examples import Limits, read_examples
from tests.app.teach.conftest import BAG, SNEAKER, make_catalog, teach_settings


def test_a_class_of_one_picture_added_twice_is_refused_before_a_job(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    sneaker, bag = fm_pngs[SNEAKER][0], fm_pngs[BAG][0]
    make_catalog(c, "twice", {"sneaker": [sneaker, sneaker], "bag": [bag, bag]})
    r = c.post("/v1/catalogs/twice/train", json={"model": "copies"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert body["type"].endswith("not-enough-examples")
    assert "distinct pictures (copies of one picture count once)" in body["detail"]
    assert "'sneaker' (2 items, 1 distinct picture(s))" in body["detail"]
    assert body["classes"] == {"bag": 2, "sneaker": 2}
    assert body["distinct_pictures"] == {"bag": 1, "sneaker": 1}
    # One more distinct picture per class is enough; the copies stay and count as items.
    r = c.post("/v1/catalogs/twice/items", files=[("file", ("b.png", fm_pngs[BAG][1]))],
               data={"label": "bag"})  # fmt: skip
    assert r.status_code == 201, r.text
    r = c.post("/v1/catalogs/twice/items", files=[("file", ("s.png", fm_pngs[SNEAKER][1]))],
               data={"label": "sneaker"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert c.post("/v1/catalogs/twice/train", json={"model": "copies"}).status_code == 202


def _resaved(png: bytes) -> bytes:
    """The same pixels in another file (a text chunk added): another sha256, one embedding."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "saved again")
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, "PNG", pnginfo=info)
    assert buf.getvalue() != png
    return buf.getvalue()


def test_the_job_counts_copies_by_embedding_too(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]]
) -> None:
    """Two files of one picture (re-saved) are different files but one embedding: the job's
    read of the examples refuses the class as validation would hold out only copies."""
    sneakers = fm_pngs[SNEAKER][:3]
    bag = fm_pngs[BAG][0]
    with TestClient(create_app(teach_settings(tmp_path))) as c:
        make_catalog(c, "resaved", {"sneaker": sneakers, "bag": [bag, _resaved(bag)]})
        service: CatalogService = c.app.state.catalogs  # type: ignore[attr-defined]
        with pytest.raises(NotEnoughExamples) as raised:
            read_examples(service, "resaved", Limits())
    assert "'bag' (2 items, 1 distinct picture(s))" in raised.value.detail
    assert raised.value.extra["distinct_pictures"] == {"bag": 1, "sneaker": 3}
