"""Zips sent the wrong way: loose files to items:zip (it answered 200 with nothing added), and a
zip to the single-item add route or to predict (415 'unrecognised binary data')."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.app.teach.conftest import BAG
from tests.images import zip_bytes


def test_a_zip_of_loose_files_is_a_422_with_the_layout(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "loose", "model": "products"}).status_code == 201
    loose = zip_bytes(
        {"1.png": fm_pngs[BAG][0], "2.png": fm_pngs[BAG][1], "__MACOSX/._1.png": b"x"}
    )
    r = c.post("/v1/catalogs/loose/items:zip", content=loose)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert "None of the zip's 2 files is inside a class folder" in detail, detail
    assert "one folder per class" in detail and "cat/1.jpg, dog/2.png" in detail
    assert c.get("/v1/catalogs/loose").json()["item_count"] == 0
    # One class folder beside loose files is a valid upload: the loose files are skipped.
    mixed = zip_bytes({"1.png": fm_pngs[BAG][0], "bag/2.png": fm_pngs[BAG][1]})
    r = c.post("/v1/catalogs/loose/items:zip", content=mixed)
    assert r.status_code == 200 and r.json()["added"] == {"bag": 1}, r.text


def test_a_zip_sent_as_an_image_says_where_zips_go(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "z", "model": "products"}).status_code == 201
    pictures = zip_bytes({"bag/1.png": fm_pngs[BAG][0]})
    where = "This is a zip archive; send zips of class folders to POST /v1/catalogs/z/items:zip"
    r = c.post("/v1/catalogs/z/items?label=bag", content=pictures)
    assert r.status_code == 415 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"].startswith(where), r.text
    files = [("file", ("a.png", fm_pngs[BAG][0])), ("file", ("pics.zip", pictures))]
    r = c.post("/v1/catalogs/z/items", files=files, data={"label": "bag"})
    assert r.status_code == 415, r.text
    assert r.json()["detail"].startswith(f"image 2 ('pics.zip', image_index 1): {where}"), r.text
    assert r.json()["image_index"] == 1
    assert c.get("/v1/catalogs/z").json()["item_count"] == 0
    for data in (pictures, b"PK\x05\x06" + b"\0" * 18):  # with entries, and an empty zip
        r = c.post("/v1/models/products/predict", content=data)
        assert r.status_code == 415, r.text
        assert "zip archives are not images, send the images themselves" in r.json()["detail"]


def test_an_image_sent_as_a_zip_says_where_images_go(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    """Round 25: a PNG sent to items:zip got "not a readable zip file (File is not a zip
    file)"; it says what it is and where single images go."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "pic", "model": "products"}).status_code == 201
    r = c.post("/v1/catalogs/pic/items:zip", content=fm_pngs[BAG][0])
    assert r.status_code == 422, r.text
    assert "a PNG image, not a zip" in r.json()["detail"]
    assert "POST /v1/catalogs/pic/items" in r.json()["detail"]
