"""Round 44 check of catalogs: a JSON body of several images was refused as "2 images but 1
item descriptions" (none had been given), a search's query parameter that disagreed with its
JSON body lost in silence, and a JPEG turned by its EXIF orientation was described by its
coded size while its thumbnail, embedding and every viewer show it turned."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

ClientFactory = Callable[..., TestClient]


def _picture(seed: int, size: tuple[int, int] = (40, 24), exif: Image.Exif | None = None) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90, exif=exif or Image.Exif())
    return out.getvalue()


@pytest.fixture
def client(make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "c", "model": "tiny"}).status_code == 201
        yield c


def test_a_json_body_of_several_images_adds_each(client: TestClient) -> None:
    images = [{"b64": base64.b64encode(_picture(i)).decode()} for i in range(3)]
    r = client.post("/v1/catalogs/c/items?label=shoe", json={"images": images})
    assert r.status_code == 201, r.text
    assert len(set(r.json()["ids"])) == 3
    assert {i["label"] for i in r.json()["items"]} == {"shoe"}
    r = client.post("/v1/catalogs/c/items?id=one", json={"images": images})
    assert r.status_code == 422 and "names one item" in r.json()["detail"]
    assert client.get("/v1/catalogs/c/items").json()["total"] == 3


def test_a_search_parameter_given_in_the_query_and_the_body_must_agree(
    client: TestClient,
) -> None:
    files = [("file", (f"{i}.jpg", _picture(i), "image/jpeg")) for i in range(3)]
    r = client.post("/v1/catalogs/c/items", files=files, data={"id": ["a", "b", "x"]})
    assert r.status_code == 201, r.text
    search = "/v1/catalogs/c/search"
    for query, body, said in (
        ("?item_id=b", {"item_id": "a"}, "item_id is given twice, 'b' in the query and 'a'"),
        ("?k=1", {"item_id": "a", "k": 2}, "k is given twice, 1 in the query and 2"),
        ("?label=x", {"item_id": "a", "label": "y"}, "label is given twice"),
    ):
        r = client.post(search + query, json=body)
        assert r.status_code == 422 and said in r.json()["detail"], r.text
    r = client.post(search + "?k=2", json={"item_id": "a", "k": 2})  # the same value: fine
    assert r.status_code == 200 and len(r.json()["neighbors"]) == 2


def test_a_stored_picture_is_described_as_shown(client: TestClient) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: 40x24 coded, 24x40 on screen
    files = [("file", ("turned.jpg", _picture(7, exif=exif), "image/jpeg"))]
    r = client.post("/v1/catalogs/c/items", files=files, data={"id": "turned"})
    assert r.status_code == 201, r.text
    image = client.get("/v1/catalogs/c/items/turned").json()["image"]
    assert (image["width"], image["height"]) == (24, 40)
    thumb = Image.open(io.BytesIO(client.get("/v1/catalogs/c/items/turned/thumbnail").content))
    assert thumb.width < thumb.height
