"""A blank picture (one flat colour as the model sees it) added to a catalog is added, and the
add's answer warns of it per item, as predict flags it (`image.blank`)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

ClientFactory = Callable[..., TestClient]


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_a_blank_picture_is_added_with_a_warning_naming_it(make_client: ClientFactory) -> None:
    rng = np.random.default_rng(0)
    shirt = png(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)))
    white = png(Image.new("RGB", (640, 480), "white"))
    dot = png(Image.new("RGB", (1, 1), (30, 120, 200)))
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "b", "model": "tiny"}).status_code == 201
        files = [
            ("file", ("shirt.png", shirt, "image/png")),
            ("file", ("white.png", white, "image/png")),
            ("file", ("dot.png", dot, "image/png")),
        ]
        r = c.post("/v1/catalogs/b/items", files=files, data={"label": "x"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["added"] == 3 and len(body["ids"]) == 3  # added, not refused
        assert body["duplicates"] == [] and body["duplicates_skipped"] == 0
        warned = body["warnings"]
        assert [(w["index"], w["filename"], w["id"]) for w in warned] == [
            (1, "white.png", body["ids"][1]),
            (2, "dot.png", body["ids"][2]),
        ]
        assert all("blank picture (one flat colour)" in w["warning"] for w in warned)
        # predict says the same of the same bytes
        p = c.post("/v1/models/tiny/predict", content=white, headers={"content-type": "image/png"})
        assert p.status_code == 200 and p.json()["results"][0]["image"]["blank"] is True

        # a raw-body add of a picture with something in it: no warnings
        r = c.post("/v1/catalogs/b/items", content=shirt, headers={"content-type": "image/png"})
        assert r.status_code == 201 and r.json()["warnings"] == []

        # the OpenAPI document describes the field
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert "warnings" in schema["ItemsCreated"]["properties"]
        assert set(schema["ItemWarning"]["properties"]) == {"index", "filename", "id", "warning"}


def test_a_zip_of_class_folders_warns_of_its_blank_pictures(make_client: ClientFactory) -> None:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            noise = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            zf.writestr(f"shirt/{i}.png", png(Image.fromarray(noise)))
        zf.writestr("shirt/white.png", png(Image.new("L", (64, 48), 255)))
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "z", "model": "tiny"}).status_code == 201
        r = c.post(
            "/v1/catalogs/z/items:zip",
            content=buf.getvalue(),
            headers={"content-type": "application/zip"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["added"] == {"shirt": 4}
        assert [w["name"] for w in body["warnings"]] == ["shirt/white.png"]
        assert "one flat colour" in body["warnings"][0]["warning"]
