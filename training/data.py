"""Data sources: locating the raw files and reading them into numpy arrays."""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

PROJECT_ROOT = Path(__file__).resolve().parent.parent

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))


class DataNotFound(FileNotFoundError):
    """A data set is missing; the message names the command that fetches it."""


def data_root() -> Path:
    """Where scripts/fetch-data puts everything (IMGCLASS_DATA overrides)."""
    return Path(os.environ.get("IMGCLASS_DATA", PROJECT_ROOT / "data"))


@dataclass(frozen=True)
class ArraySplits:
    x_train: npt.NDArray[np.uint8]  # N x H x W x C
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.uint8]
    y_test: npt.NDArray[np.int64]
    class_names: tuple[str, ...]


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """Read an IDX file (optionally .gz) as written by LeCun et al. for MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(dims)) if dims else 0
    if data.size != expected:
        raise ValueError(f"{path}: {data.size} bytes of data, header says {dims}")
    return data.reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataNotFound(f"{stem}[.gz] not found in {folder}; run scripts/fetch-data")


def load_idx_dataset(folder: Path, class_names: tuple[str, ...], name: str) -> ArraySplits:
    """MNIST-layout folder (train/t10k images+labels, plain or gzipped) -> arrays."""
    if not folder.is_dir():
        raise DataNotFound(f"{name} not found in {folder}; run scripts/fetch-data")
    x_train = read_idx(_find(folder, "train-images-idx3-ubyte"))
    y_train = read_idx(_find(folder, "train-labels-idx1-ubyte"))
    x_test = read_idx(_find(folder, "t10k-images-idx3-ubyte"))
    y_test = read_idx(_find(folder, "t10k-labels-idx1-ubyte"))
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"{folder}: image and label counts differ")
    return ArraySplits(
        x_train=x_train[..., None],
        y_train=y_train.astype(np.int64),
        x_test=x_test[..., None],
        y_test=y_test.astype(np.int64),
        class_names=class_names,
    )


def load_fashion_mnist(folder: Path | None = None) -> ArraySplits:
    return load_idx_dataset(folder or data_root() / "fashion-mnist", FASHION_MNIST_CLASSES, "Fashion-MNIST")


def load_mnist(folder: Path | None = None) -> ArraySplits:
    return load_idx_dataset(folder or data_root() / "mnist", MNIST_CLASSES, "MNIST")
