"""Fixtures for training tests: small data sets written in the real on-disk formats."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tests.conftest import DATA, require

CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def write_idx(path: Path, array: npt.NDArray[np.uint8], gz: bool) -> Path:
    """IDX as LeCun et al. specify it: 0x0000, type 0x08 (ubyte), ndim, big-endian dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_idx_set(
    folder: Path,
    x_train: npt.NDArray[np.uint8],
    y_train: npt.NDArray[np.int64],
    x_test: npt.NDArray[np.uint8],
    y_test: npt.NDArray[np.int64],
    gz: bool,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", x_train, gz)
    write_idx(folder / "train-labels-idx1-ubyte", y_train.astype(np.uint8), gz)
    write_idx(folder / "t10k-images-idx3-ubyte", x_test, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", y_test.astype(np.uint8), gz)
    return folder


def write_cifar(
    folder: Path,
    train: tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]],
    test: tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]],
) -> Path:
    """The `cifar-10-batches-py` layout: 5 training batches, test_batch, batches.meta.

    Images are N x 32 x 32 x 3; the files hold N x 3072 rows (R plane, G plane, B plane) and
    bytes keys, like the pickles of the official archive.
    """
    folder.mkdir(parents=True, exist_ok=True)

    def batch(
        x: npt.NDArray[np.uint8], y: npt.NDArray[np.int64], label: str
    ) -> dict[bytes, object]:
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        return {
            b"batch_label": label.encode(),
            b"labels": [int(v) for v in y],
            b"data": np.ascontiguousarray(rows, dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(y))],
        }

    x, y = train
    for i, part in enumerate(np.array_split(np.arange(len(y)), 5), start=1):
        with (folder / f"data_batch_{i}").open("wb") as f:
            pickle.dump(batch(x[part], y[part], f"training batch {i} of 5"), f, protocol=2)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump(batch(*test, "testing batch 1 of 1"), f, protocol=2)
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": len(y) // 5}
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def synthetic_cifar(n: int, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Noise images in which every 'bird' (class 2) carries a bright blob somewhere: learnable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    y[: n // 4] = 2  # enough positives for the one-vs-rest test
    rng.shuffle(y)
    x = rng.integers(0, 120, size=(n, 32, 32, 3), dtype=np.uint8)
    for i in np.flatnonzero(y == 2):
        r, c = rng.integers(2, 22, size=2)
        x[i, r : r + 8, c : c + 8, :] = 255
    return x, y.astype(np.int64)


@pytest.fixture(scope="session")
def mnist_real() -> tuple[npt.NDArray[np.uint8], ...]:
    """A few hundred real MNIST digits (train and test) from the fetched data."""
    from training.data import load_mnist

    data = load_mnist(require(DATA / "mnist"))
    return (
        data.x_train[:900, :, :, 0],
        data.y_train[:900],
        data.x_test[:300, :, :, 0],
        data.y_test[:300],
    )


@pytest.fixture(scope="session")
def mnist_small_dir(tmp_path_factory: pytest.TempPathFactory, mnist_real) -> Path:  # type: ignore[no-untyped-def]
    """A data dir whose mnist/ holds 900 train and 300 test real digits as gzipped IDX."""
    root = tmp_path_factory.mktemp("data")
    write_idx_set(root / "mnist", *mnist_real, gz=True)
    return root


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    return write_cifar(
        root / "cifar-10-batches-py", synthetic_cifar(500, seed=1), synthetic_cifar(200, seed=2)
    )


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes of real-format files of various sizes and modes, plus broken files."""
    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    formats = [("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("GIF", ".gif")]
    for cls, value in (("dark", 40), ("light", 220)):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            fmt, ext = formats[i % len(formats)]
            w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
            arr = np.clip(rng.normal(value, 10, size=(h, w, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr, "RGB")
            if i % 3 == 1:
                img = img.convert("L")
            if fmt == "GIF":
                img = img.convert("P")
            (root / cls / f"img_{i}{ext}").write_bytes(encode(img, fmt))
    (root / "dark" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 4)
    (root / "light" / "notes.txt").write_text("not an image", encoding="utf-8")
    return root
