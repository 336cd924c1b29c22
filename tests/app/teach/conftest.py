"""Teach fixtures: the shipped `products` bundle as backbone, real Fashion-MNIST test images."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.registry import ModelRegistry
from tests.conftest import DATA, ROOT, make_settings, require
from training.data import read_idx

# Fashion-MNIST class indices -> names (the products bundle's labels.txt order).
FM = "fashion-mnist"
SNEAKER, BAG, SANDAL, BOOT, SHIRT, TROUSER = 7, 8, 5, 9, 6, 1


def fm_test_split() -> tuple[np.ndarray, np.ndarray]:
    root = require(DATA / FM)
    x = read_idx(root / "t10k-images-idx3-ubyte.gz")
    y = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    return x, y


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def write_sneakers_and_bags(out: Path, per_class: int) -> dict[str, list[Path]]:
    """The first `per_class` Fashion-MNIST test sneakers and bags as PNG files in `out`."""
    x, y = fm_test_split()
    files: dict[str, list[Path]] = {}
    for label, cls in (("sneaker", SNEAKER), ("bag", BAG)):
        files[label] = []
        for j, i in enumerate(np.flatnonzero(y == cls)[:per_class]):
            p = out / f"{label}-{j}.png"
            p.write_bytes(png(x[i]))
            files[label].append(p)
    return files


@pytest.fixture(scope="session")
def fm_pngs() -> dict[int, list[bytes]]:
    """The first 60 Fashion-MNIST test images of each class, as PNG files."""
    x, y = fm_test_split()
    return {c: [png(x[i]) for i in np.flatnonzero(y == c)[:60]] for c in range(10)}


def teach_settings(tmp: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {"enabled_models": ["products"], "model_poll_seconds": 0}
    values.update(overrides)
    return make_settings(ROOT / "models", tmp, **values)


@pytest.fixture
def teach_client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(teach_settings(tmp_path))) as c:
        yield c


def add_items(c: TestClient, catalog: str, label: str, images: list[bytes], **kw: Any) -> None:
    files = [("file", (f"{label}{i}.png", data, "image/png")) for i, data in enumerate(images)]
    r = c.post(f"/v1/catalogs/{catalog}/items", files=files, data={"label": label}, **kw)
    assert r.status_code == 201, r.text


def make_catalog(c: TestClient, name: str, classes: dict[str, list[bytes]]) -> None:
    r = c.post("/v1/catalogs", json={"name": name, "model": "products"})
    assert r.status_code == 201, r.text
    for label, images in classes.items():
        for start in range(0, len(images), 30):
            add_items(c, name, label, images[start : start + 30])


def wait_job(c: TestClient, url: str, timeout: float = 60, **kw: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = c.get(url, **kw).json()
        if body["status"] not in ("queued", "running"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {url} still running after {timeout} s")


def follower_registry(data: Path, cls: type[ModelRegistry] = ModelRegistry) -> Any:
    """A second, real registry on the same data folder (another process's view), products only;
    `cls`: a ModelRegistry subclass (e.g. one that counts its scans)."""
    reg = cls(
        ROOT / "models",
        taught_dir=data / "models",
        providers="cpu",
        warmup_runs=0,
        enabled=["products"],
    )
    reg.load_all()
    return reg
