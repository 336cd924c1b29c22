"""HTTP API against the real tiny bundle and the real onnxruntime session."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.bundle import load_bundle
from app.imaging import ImageLimits, prepare
from app.main import create_app
from app.runtime import OnnxModel
from tests.conftest import make_settings
from tests.images import encode, fashion_png, photo, png_with_header

PREDICT = "/v1/models/tiny/predict"


def assert_problem(resp, status: int, contains: str = "") -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert "Traceback" not in resp.text
    if contains:
        assert contains.lower() in body["detail"].lower(), body["detail"]
    return body


@pytest.fixture(scope="module")
def direct(tiny_models_dir: Path) -> OnnxModel:
    """The same bundle run directly, to check the HTTP path end to end."""
    return OnnxModel(load_bundle(tiny_models_dir / "tiny"), ["CPUExecutionProvider"])


def expected_top1(direct: OnnxModel, data: bytes) -> int:
    arr = prepare(data, direct.bundle.metadata.input, ImageLimits()).array
    return int(direct.run(arr[None]).probs[0].argmax())


# --- metadata and probes ---------------------------------------------------------------


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["models"] == ["tiny"]


def test_list_and_get_model(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert [m["name"] for m in body["models"]] == ["tiny"]
    m = client.get("/v1/models/tiny").json()
    assert m["num_classes"] == 10 and m["labels"][9] == "Ankle boot"
    assert m["provider"] == "CPUExecutionProvider"
    assert m["input"]["height"] == 28 and m["input"]["color"] == "gray"
    assert m["metrics"][0]["n_samples"] == 1000
    assert len(m["sha256"]) == 64


def test_unknown_model_is_404(client: TestClient) -> None:
    assert_problem(client.get("/v1/models/nope"), 404, "no model named 'nope'")
    png = encode(Image.new("L", (28, 28)), "PNG")
    assert_problem(client.post("/v1/models/nope/predict", content=png), 404)
    # A shipped model is addressed by its own version too (as under /v2), and only by it.
    version = client.get("/v1/models/tiny").json()["version"]
    assert client.get(f"/v1/models/tiny@{version}").json()["version"] == version
    assert_problem(client.get("/v1/models/tiny@999"), 404, "has no version '999'")
    # names no version, and breaks the documented pattern: a 422 (a 404 before round 42)
    assert_problem(client.get("/v1/models/tiny@"), 422, "(pattern ^[a-z0-9]")
    # ...and its requests queue with the plain name's: one queue, one bound.
    assert client.post(f"/v1/models/tiny@{version}/predict", content=png).status_code == 200
    schedulers = client.app.state.schedulers._by_name  # type: ignore[attr-defined]
    assert "tiny" in schedulers and f"tiny@{version}" not in schedulers
    # A long name is echoed cut short in the detail (a 10,000-character name made a 20 KB
    # answer; `instance` still holds the path as sent). Over 64 characters it breaks the
    # documented pattern: a 422 (a 404 before round 42).
    r = client.get("/v1/models/" + "n" * 10_000)
    assert_problem(r, 422, "(10,000 chars)")
    assert len(r.json()["detail"]) < 500


def test_openapi_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/models/{name}/predict" in spec["paths"]
    body = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]
    assert "multipart/form-data" in body["content"]
    assert client.get("/docs").status_code == 200


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    assert_problem(client.get("/v9/whatever"), 404)


# --- predictions -----------------------------------------------------------------------


def test_predict_raw_body_matches_direct_run(
    client: TestClient, fashion_mnist, direct: OnnxModel
) -> None:  # type: ignore[no-untyped-def]
    data = fashion_png(fashion_mnist.x_test[0])
    r = client.post(PREDICT, content=data, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny" and body["top_k"] == 5
    res = body["results"][0]
    preds = res["predictions"]
    assert len(preds) == 5
    scores = [p["score"] for p in preds]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-5
    assert preds[0]["index"] == expected_top1(direct, data)
    assert res["image"] == {
        "format": "PNG",
        "width": 28,
        "height": 28,
        "mode": "L",
        "orientation": 1,
        "frames": 1,
        "decoded_width": 28,
        "decoded_height": 28,
        "inverted": False,
        "blank": False,
        "exif": "none",
        "frames_capped": False,
    }
    assert set(res["timings"]) == {"decode_ms", "preprocess_ms", "inference_ms", "total_ms"}


def test_predict_multipart_batch(client: TestClient, fashion_mnist, direct: OnnxModel) -> None:  # type: ignore[no-untyped-def]
    images = [fashion_png(fashion_mnist.x_test[i]) for i in range(6)]
    files = [("file", (f"img{i}.png", d, "image/png")) for i, d in enumerate(images)]
    r = client.post(PREDICT, files=files, params={"top_k": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [f"img{i}.png" for i in range(6)]
    for res, data in zip(results, images, strict=True):
        assert len(res["predictions"]) == 3
        assert res["predictions"][0]["index"] == expected_top1(direct, data)


def test_top_k_capped_and_validated(client: TestClient) -> None:
    png = encode(Image.new("L", (28, 28), 30), "PNG")
    r = client.post(PREDICT, content=png, params={"top_k": 50})
    assert r.status_code == 200 and r.json()["top_k"] == 10
    assert len(r.json()["results"][0]["predictions"]) == 10
    assert_problem(client.post(PREDICT, content=png, params={"top_k": 0}), 422)
    assert_problem(client.post(PREDICT, content=png, params={"top_k": "x"}), 422)


def test_golden_real_fashion_photo(client: TestClient, photos_dir: Path) -> None:
    """A real Fashion-MNIST test image (shipped in foolbox): the tiny model, trained with a
    fixed seed, calls it an ankle boot (label 9) with high confidence."""
    data = (photos_dir / "foolbox" / "fashionMNIST_00_9.png").read_bytes()
    r = client.post(PREDICT, files={"file": ("boot.png", data, "image/png")})
    top = r.json()["results"][0]["predictions"][0]
    assert top["label"] == "Ankle boot" and top["index"] == 9
    assert top["score"] > 0.5


def test_real_photo_of_any_size_is_accepted(client: TestClient, photos_dir: Path) -> None:
    data = (photos_dir / "matplotlib" / "grace_hopper.jpg").read_bytes()
    r = client.post(PREDICT, files={"file": ("hopper.jpg", data, "image/jpeg")})
    assert r.status_code == 200
    img = r.json()["results"][0]["image"]
    assert img["format"] == "JPEG" and (img["width"], img["height"]) == (512, 600)


def test_concurrent_requests_all_answered_correctly(
    client: TestClient, fashion_mnist, direct: OnnxModel
) -> None:  # type: ignore[no-untyped-def]
    images = [fashion_png(fashion_mnist.x_test[i]) for i in range(32)]
    expected = [expected_top1(direct, d) for d in images]

    def call(i: int) -> int:
        r = client.post(PREDICT, content=images[i])
        assert r.status_code == 200, r.text
        return int(r.json()["results"][0]["predictions"][0]["index"])

    with ThreadPoolExecutor(max_workers=32) as pool:
        got = list(pool.map(call, range(32)))
    assert got == expected


# --- bad input: one test per class --------------------------------------------------------


def test_empty_body(client: TestClient) -> None:
    assert_problem(client.post(PREDICT, content=b""), 422, "no image data")


def test_text_file(client: TestClient) -> None:
    files = {"file": ("notes.txt", b"just some text\n", "text/plain")}
    body = assert_problem(client.post(PREDICT, files=files), 415, "text")
    assert "JPEG" in body["detail"] and "PNG" in body["accepted"]


def test_html_named_jpg(client: TestClient) -> None:
    html = b"<!DOCTYPE html><html><body>hi</body></html>"
    files = {"file": ("cat.jpg", html, "image/jpeg")}
    assert_problem(client.post(PREDICT, files=files), 415, "HTML")


def test_truncated_jpeg(client: TestClient, photos_dir: Path) -> None:
    data = (photos_dir / "matplotlib" / "grace_hopper.jpg").read_bytes()
    assert_problem(client.post(PREDICT, content=data[: len(data) // 2]), 422, "truncated")


def test_zero_and_one_pixel_images(client: TestClient) -> None:
    """A 0x0 PNG is not a picture (422); a 1x1 one is, and is classified (round 39: it was
    refused under IMGCLASS_MIN_IMAGE_SIDE's old default, 8)."""
    assert_problem(client.post(PREDICT, content=png_with_header(0, 0)), 422)
    one = encode(Image.new("L", (1, 1)), "PNG")
    r = client.post(PREDICT, content=one)
    assert r.status_code == 200, r.text
    image = r.json()["results"][0]["image"]
    assert (image["width"], image["height"], image["blank"]) == (1, 1, True)


def test_huge_dimension_png_header(client: TestClient) -> None:
    body = assert_problem(client.post(PREDICT, content=png_with_header(60_000, 60_000)), 413)
    assert body["limit_pixels"] == 40_000_000


def test_oversized_body(client: TestClient) -> None:
    blob = b"\xff\xd8\xff" + b"\0" * (20 * 1024 * 1024 + 10)
    assert_problem(client.post(PREDICT, content=blob), 413)
    files = {"file": ("big.jpg", blob, "image/jpeg")}
    assert_problem(client.post(PREDICT, files=files), 413)


def test_too_many_images(client: TestClient) -> None:
    png = encode(Image.new("L", (28, 28)), "PNG")
    files = [("file", (f"{i}.png", png, "image/png")) for i in range(33)]
    assert_problem(client.post(PREDICT, files=files), 413, "at most 32")


def test_multipart_without_file_part(client: TestClient) -> None:
    r = client.post(PREDICT, data={"image": "x"}, files={"other": ("a.png", b"x", "image/png")})
    assert_problem(r, 422, "no 'file' part")


def test_bad_image_in_batch_names_it(client: TestClient) -> None:
    png = encode(Image.new("L", (28, 28)), "PNG")
    files = [("file", ("ok.png", png, "image/png")), ("file", ("bad.png", b"nope", "image/png"))]
    body = assert_problem(
        client.post(PREDICT, files=files), 415, "image 2 ('bad.png', image_index 1)"
    )
    assert body["image_index"] == 1


def test_a_batch_error_counts_the_image_as_its_image_index_does(client: TestClient) -> None:
    """A walkthrough: a text file first in a batch was "image 1 ('text.jpg')" in the detail and
    `image_index` 0 in the problem, as if they disagreed. The detail says both numbers."""
    png = encode(Image.new("L", (28, 28)), "PNG")
    files = [("file", ("text.jpg", b"hello", "image/jpeg")), ("file", ("ok.png", png, "image/png"))]
    body = assert_problem(
        client.post(PREDICT, files=files), 415, "image 1 ('text.jpg', image_index 0): "
    )
    assert body["image_index"] == 0


def test_cmyk_jpeg_accepted(client: TestClient, photos_dir: Path) -> None:
    img = photo(photos_dir / "skimage" / "chelsea.png").convert("CMYK")
    r = client.post(PREDICT, content=encode(img, "JPEG"))
    assert r.status_code == 200 and r.json()["results"][0]["image"]["mode"] == "CMYK"


def test_sixteen_bit_png_accepted(client: TestClient) -> None:
    arr = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    r = client.post(PREDICT, content=encode(Image.fromarray(arr), "PNG"))
    assert r.status_code == 200
    assert r.json()["results"][0]["image"]["mode"].startswith("I")


def test_palette_with_transparency_accepted(client: TestClient) -> None:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    r = client.post(PREDICT, content=encode(img, "PNG", transparency=0))
    assert r.status_code == 200 and r.json()["results"][0]["image"]["mode"] == "P"


def test_exif_rotated_reports_orientation(client: TestClient, photos_dir: Path) -> None:
    img = photo(photos_dir / "matplotlib" / "grace_hopper.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8
    r = client.post(PREDICT, content=encode(img, "JPEG", exif=exif.tobytes()))
    assert r.status_code == 200 and r.json()["results"][0]["image"]["orientation"] == 8


def test_animated_gif_accepted(client: TestClient) -> None:
    frames = [Image.new("L", (28, 28), v) for v in (0, 128, 255)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r = client.post(PREDICT, content=data)
    assert r.status_code == 200 and r.json()["results"][0]["image"]["frames"] == 3


def test_wrong_content_type_is_ignored(client: TestClient, fashion_mnist) -> None:  # type: ignore[no-untyped-def]
    png = fashion_png(fashion_mnist.x_test[1])
    r1 = client.post(PREDICT, content=png, headers={"content-type": "image/jpeg"})
    r2 = client.post(PREDICT, content=png, headers={"content-type": "application/pdf"})
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["results"][0]["predictions"] == r2.json()["results"][0]["predictions"]
    assert r1.json()["results"][0]["image"]["format"] == "PNG"


def test_readyz_says_why_no_model_is_served(tiny_models_dir: Path, tmp_path: Path) -> None:
    """Round 32: a models folder that does not exist (a mistyped IMGCLASS_MODELS_DIR) gave a
    503 `unavailable` saying nothing, like an endless load; the reason was one log line."""
    models = tmp_path / "models-typo"
    cases: list[tuple[str, str]] = []
    with TestClient(create_app(make_settings(models, tmp_path))) as c:
        r = c.get("/readyz")
        cases.append((r.json()["status"], r.json()["detail"]))
        models.mkdir()
        (models / "stray.txt").write_text("not a bundle")
        c.app.state.registry.refresh()
        r = c.get("/readyz")
        cases.append((r.json()["status"], r.json()["detail"]))
        (models / "stray.txt").unlink()
        c.app.state.registry.refresh()
        cases.append((c.get("/readyz").json()["status"], c.get("/readyz").json()["detail"]))
        shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
        c.app.state.registry.refresh()
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["detail"] is None, r.text
    assert cases[0][0] == "unavailable" and "does not exist" in cases[0][1]
    assert cases[1][0] == "unavailable" and "Every model bundle was refused" in cases[1][1]
    assert cases[2][0] == "unavailable" and "holds no model bundle" in cases[2][1]
    assert str(tmp_path) not in "".join(d for _, d in cases)
    # unpolled, the detail says what loads the bundles (round 32: "looked at again every few
    # seconds" and "holds no model bundle" while it held one)
    shutil.rmtree(models)
    unpolled = make_settings(models, tmp_path / "again", model_poll_seconds=0)
    with TestClient(create_app(unpolled)) as c:
        assert "not looked at again" in c.get("/readyz").json()["detail"]
        shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
        detail = c.get("/readyz").json()["detail"]
        assert "holds bundles not loaded yet" in detail and "not looked at again" in detail
