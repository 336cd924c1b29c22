"""POST /v1/preview (app/api/preview.py): the picture as the server decodes it, as a JPEG, for
clients that cannot draw the format (HEIC, TIFF in most browsers)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.conftest import make_settings
from tests.images import big_png, encode, heic, png_with_header


def _gradient(width: int, height: int) -> Image.Image:
    """Red rising left to right, green top to bottom: where each corner went is visible."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, np.full_like(x, 60)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _jpeg(response_content: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(response_content))
    assert img.format == "JPEG"
    img.load()
    return img


@pytest.mark.parametrize(
    ("fmt", "reported"), [("HEIC", "HEIF"), ("TIFF", "TIFF"), ("PNG", "PNG"), ("WEBP", "WEBP")]
)
def test_the_picture_comes_back_as_a_jpeg_of_the_asked_size(
    client: TestClient, fmt: str, reported: str
) -> None:
    picture = _gradient(400, 300)
    data = heic(picture) if fmt == "HEIC" else encode(picture, fmt)
    r = client.post("/v1/preview?size=200", content=data)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-image-format"] == reported
    assert r.headers["x-image-size"] == "400x300"
    out = _jpeg(r.content)
    assert out.size == (200, 150)
    # the same picture, not just any JPEG: compare with the original scaled alike
    want = np.asarray(picture.resize((200, 150), Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(np.asarray(out, dtype=np.float32) - want).mean() < 6


def test_exif_orientation_is_applied_and_alpha_lies_on_white(client: TestClient) -> None:
    rotated = _gradient(60, 40)  # stored 60x40, shown 40x60 (orientation 6: 90 degrees)
    exif = Image.Exif()
    exif[0x0112] = 6
    r = client.post("/v1/preview", content=encode(rotated, "JPEG", exif=exif.tobytes()))
    assert r.status_code == 200, r.text
    assert _jpeg(r.content).size == (40, 60)  # never upscaled past the picture
    clear = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    r = client.post("/v1/preview", files={"file": ("clear.png", encode(clear, "PNG"))})
    assert r.status_code == 200, r.text
    assert np.asarray(_jpeg(r.content)).min() >= 250  # transparent -> white


def test_json_base64_body_is_accepted(client: TestClient) -> None:
    b64 = base64.b64encode(encode(_gradient(50, 20), "PNG")).decode()
    r = client.post("/v1/preview?size=16", json={"images": [{"b64": b64}]})
    assert r.status_code == 200, r.text
    assert _jpeg(r.content).size == (16, 6)


@pytest.mark.parametrize("body", ["multipart", "json"])
def test_more_than_one_image_is_413(client: TestClient, body: str) -> None:
    png = encode(_gradient(20, 20), "PNG")
    if body == "multipart":
        r = client.post("/v1/preview", files=[("file", ("a.png", png)), ("file", ("b.png", png))])
    else:
        b64 = base64.b64encode(png).decode()
        r = client.post("/v1/preview", json={"images": [{"b64": b64}, {"b64": b64}]})
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["limit_images"] == 1


@pytest.mark.parametrize(
    ("query", "data", "status", "said"),
    [
        ("", b"just some text, not a picture", 415, "not an image"),
        ("", b"", 422, "no image data"),
        ("", png_with_header(100_000, 100_000), 413, "pixels"),
        ("?size=8", None, 422, "size"),
        ("?size=1025", None, 422, "size"),
        ("?size=abc", None, 422, "size"),
        ("?sise=64", None, 422, "it takes size"),
    ],
)
def test_bad_requests_are_problems_that_say_what_was_wrong(
    client: TestClient, query: str, data: bytes | None, status: int, said: str
) -> None:
    body = encode(_gradient(20, 20), "PNG") if data is None else data
    r = client.post(f"/v1/preview{query}", content=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert said.lower() in r.text.lower()


def test_a_damaged_picture_is_422(client: TestClient) -> None:
    whole = encode(_gradient(200, 200), "JPEG")
    r = client.post("/v1/preview", content=whole[: len(whole) // 3])
    assert r.status_code in (200, 422)  # Pillow draws a cut JPEG's first rows when it can
    r = client.post("/v1/preview", content=whole[:40])
    assert r.status_code == 422, r.text


@pytest.mark.slow  # a 40 MP decode
def test_a_large_picture_is_reduced_while_decoded(client: TestClient) -> None:
    """A 40 MP RGBA PNG at the pixel limit: answered, at the asked size."""
    r = client.post("/v1/preview?size=64", content=big_png(8000, 5000))
    assert r.status_code == 200, r.text
    assert _jpeg(r.content).size == (64, 40)


def test_the_route_is_documented_with_its_jpeg_answer(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/v1/preview"]["post"]
    assert "image/jpeg" in op["responses"]["200"]["content"]
    assert {"413", "415", "422"} <= set(op["responses"])
    assert op["requestBody"]["required"] is True


def test_a_keyed_server_wants_the_key_for_previews(tiny_models_dir: Path, tmp_path: Path) -> None:
    settings = make_settings(
        tiny_models_dir, tmp_path, api_key="s3cret-key-for-tests", api_key_for_reads=True
    )
    png = encode(_gradient(20, 20), "PNG")
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/preview", content=png).status_code == 401
        r = c.post("/v1/preview", content=png, headers={"X-API-Key": "s3cret-key-for-tests"})
        assert r.status_code == 200, r.text
