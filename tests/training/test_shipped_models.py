"""The shipped `products` and `digits` bundles: claims, serving, and real test images."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.bundle import load_bundle
from app.main import create_app
from tests.conftest import ROOT, make_settings
from tests.images import encode, fashion_png
from training.data import load_fashion_mnist, load_mnist

pytestmark = pytest.mark.slow  # the shipped bundles over HTTP: out of the fast subset (round 28)

SHIPPED = {
    # bundle: (data set, claimed minimum test accuracy, foolbox file prefix)
    "products": ("Fashion-MNIST", 0.94, "fashionMNIST_"),
    "digits": ("MNIST", 0.994, "mnist_"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real app serving the committed `products` and `digits` bundles."""
    settings = make_settings(
        ROOT / "models", tmp_path_factory.mktemp("shipped"), enabled_models=list(SHIPPED)
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _predict(server: TestClient, name: str, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(files), 32):  # the API's default batch limit
        chunk = [("file", (fn, data, "application/octet-stream")) for fn, data in files[i : i + 32]]
        r = server.post(f"/v1/models/{name}/predict", files=chunk, params={"top_k": 1})
        assert r.status_code == 200, r.text
        out += r.json()["results"]
    return out


def _top1(server: TestClient, name: str, files: list[tuple[str, bytes]]) -> np.ndarray:
    return np.array([res["predictions"][0]["index"] for res in _predict(server, name, files)])


def _on_white_jpeg(x: np.ndarray) -> bytes:
    """A test image as a product shot / ink on paper: dark on white, 4x larger, JPEG."""
    img = Image.fromarray(255 - np.asarray(x).squeeze().astype(np.uint8), mode="L")
    return encode(img.resize((112, 112), Image.Resampling.BICUBIC), "JPEG", quality=90)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_claims_are_on_the_full_official_test_split(name: str) -> None:
    meta = load_bundle(ROOT / "models" / name).metadata
    dataset, minimum, _ = SHIPPED[name]
    m = meta.primary_metrics
    assert m is not None and m.dataset == dataset and m.split == "test"
    assert m.n_samples == 10_000 and m.evaluated_with == "onnxruntime"
    assert m.accuracy is not None and m.accuracy >= minimum
    assert m.extra["keras_top1_agreement"] >= 0.999
    assert meta.provenance.seed is not None and meta.provenance.training_time_s


@pytest.mark.parametrize("name", list(SHIPPED))
def test_classifies_real_test_images_over_http(
    name: str, server: TestClient, photos_dir: Path
) -> None:
    """Through HTTP: the 20 foolbox sample files of the set (real PNG files from its test
    split) and the first 200 images of the official test split, sent as PNG uploads."""
    _, _, prefix = SHIPPED[name]
    files = sorted((photos_dir / "foolbox").glob(f"{prefix}*.png"))
    assert len(files) == 20
    pred = _top1(server, name, [(f.name, f.read_bytes()) for f in files])
    truth = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files])
    assert (pred == truth).sum() >= 18, f"{name}: {(pred == truth).sum()}/20 sample files"

    data = load_fashion_mnist() if name == "products" else load_mnist()
    n = 200
    uploads = [(f"test{i:03d}.png", fashion_png(data.x_test[i])) for i in range(n)]
    correct = int((_top1(server, name, uploads) == data.y_test[:n]).sum())
    # products is ~94% and digits ~99.7% on the full split; allow for a 200-image sample.
    assert correct >= (0.90 if name == "products" else 0.98) * n, f"{name}: {correct}/{n}"


@pytest.mark.parametrize("name", list(SHIPPED))
def test_dark_on_white_uploads_are_inverted_and_classified(name: str, server: TestClient) -> None:
    """Both bundles have `input.invert: auto`: the same 200 test images uploaded dark on
    white (as JPEG, 4x larger) are inverted by the server and classified as well as the
    originals; without the policy they score near chance (scripts/eval-bundles measures the
    full split both ways)."""
    data = load_fashion_mnist() if name == "products" else load_mnist()
    n = 200
    results = _predict(
        server, name, [(f"w{i}.jpg", _on_white_jpeg(data.x_test[i])) for i in range(n)]
    )
    assert all(res["image"]["inverted"] for res in results)
    pred = np.array([res["predictions"][0]["index"] for res in results])
    correct = int((pred == data.y_test[:n]).sum())
    assert correct >= (0.90 if name == "products" else 0.98) * n, f"{name}: {correct}/{n}"
    plain = _predict(server, name, [("p.png", fashion_png(data.x_test[0]))])
    assert plain[0]["image"]["inverted"] is False


@pytest.mark.slow  # 6-8 s; scripts/test runs the script itself on the full sets right after
def test_eval_bundles_script_runs_on_a_slice() -> None:
    """scripts/eval-bundles on the first 500 test images of each set (CI runs the full 10k)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "eval-bundles"), "--limit", "500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "products" in proc.stdout and "digits" in proc.stdout and "partial" in proc.stdout
