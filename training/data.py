"""Data sources: locating the raw files, reading them into numpy arrays, stratified splits.

TensorFlow-free (numpy, Pillow via app.imaging), so the serving-path evaluation can use it
without TensorFlow; the tf.data pipelines live in training/pipeline.py.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from app.bundle import InputSpec
from app.errors import ServiceError
from app.imaging import ImageLimits, prepare

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FETCH_HINT = "run scripts/fetch-data"

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
CIFAR10_FOLDER = "cifar-10-batches-py"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DataNotFound(FileNotFoundError):
    """A data set is missing; the message names the command that fetches it."""


def data_root() -> Path:
    """Where scripts/fetch-data puts everything (IMGCLASS_DATA overrides)."""
    return Path(os.environ.get("IMGCLASS_DATA", PROJECT_ROOT / "data"))


@dataclass(frozen=True)
class ArraySplits:
    x_train: npt.NDArray[Any]  # N x H x W x C, uint8 (or float32 for decoded folders)
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[Any]
    y_test: npt.NDArray[np.int64]
    class_names: tuple[str, ...]


# --- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------


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
    raise DataNotFound(f"{stem}[.gz] not found in {folder}; {FETCH_HINT}")


def load_idx_dataset(folder: Path, class_names: tuple[str, ...], name: str) -> ArraySplits:
    """MNIST-layout folder (train/t10k images+labels, plain or gzipped) -> arrays."""
    if not folder.is_dir():
        raise DataNotFound(f"{name} not found in {folder}; {FETCH_HINT}")
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
    return load_idx_dataset(
        folder or data_root() / "fashion-mnist", FASHION_MNIST_CLASSES, "Fashion-MNIST"
    )


def load_mnist(folder: Path | None = None) -> ArraySplits:
    return load_idx_dataset(folder or data_root() / "mnist", MNIST_CLASSES, "MNIST")


# --- CIFAR-10 python batches --------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file must not run code."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # protocol-2 pickles from Python 3 store array bytes this way
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _read_pickle(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        raw = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _cifar_batch(path: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    batch = _read_pickle(path)
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: expected N x 3072 data and N labels, got {data.shape}")
    # Rows hold the red, green and blue 32x32 planes one after another.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def load_cifar10(folder: Path | None = None, binary_positive: str | None = None) -> ArraySplits:
    """The standard `cifar-10-batches-py` folder; optionally one-vs-rest for one class."""
    folder = folder or data_root() / CIFAR10_FOLDER
    if (folder / CIFAR10_FOLDER / "batches.meta").is_file():  # the folder it was unpacked in
        folder = folder / CIFAR10_FOLDER
    needed = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise DataNotFound(
            f"CIFAR-10 python batches not found in {folder} (missing {', '.join(missing)}); "
            f"{FETCH_HINT} cannot download CIFAR-10 here: unpack cifar-10-python.tar.gz there"
        )
    meta = _read_pickle(folder / "batches.meta")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"])
    parts = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _cifar_batch(folder / "test_batch")
    if binary_positive is not None:
        if binary_positive not in names:
            raise ValueError(f"binary_positive {binary_positive!r} is not a CIFAR-10 class {names}")
        pos = names.index(binary_positive)
        y_train = (y_train == pos).astype(np.int64)
        y_test = (y_test == pos).astype(np.int64)
        names = (f"not_{binary_positive}", binary_positive)
    return ArraySplits(x_train, y_train, x_test, y_test, names)


# --- Image folders ------------------------------------------------------------------------


def load_image_folder(
    folder: Path, spec: InputSpec, limits: ImageLimits | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], tuple[str, ...]]:
    """One subfolder per class, images of any size/format, decoded like the server does.

    Files that the server would refuse are skipped with a warning naming them.
    """
    if not folder.is_dir():
        raise DataNotFound(
            f"image folder {folder} not found; {FETCH_HINT} or point data.path at it"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"{folder}: need at least two class subfolders, found {classes}")
    limits = limits or ImageLimits()
    images: list[npt.NDArray[np.float32]] = []
    labels: list[int] = []
    skipped: list[str] = []
    for index, name in enumerate(classes):
        files = sorted(
            p for p in (folder / name).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        for path in files:
            try:
                images.append(prepare(path.read_bytes(), spec, limits).array)
            except (ServiceError, OSError) as exc:
                skipped.append(str(path))
                logger.warning("skipping %s: %s", path, getattr(exc, "detail", exc))
                continue
            labels.append(index)
    if skipped:
        logger.warning("skipped %d unreadable file(s) in %s", len(skipped), folder)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise ValueError(f"{folder}: no readable images for class(es) {empty}")
    shape = (spec.height, spec.width, spec.channels)
    x = np.stack(images).astype(np.float32) if images else np.zeros((0, *shape), np.float32)
    return x, np.asarray(labels, dtype=np.int64), tuple(classes)


# --- Splits -------------------------------------------------------------------------------


def stratified_split(
    y: npt.NDArray[np.int64], fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Indices (rest, held_out): `fraction` of every class held out (>= 1 where a class has 2+)."""
    rng = np.random.default_rng(seed)
    rest: list[npt.NDArray[np.int64]] = []
    held: list[npt.NDArray[np.int64]] = []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n = round(len(idx) * fraction)
        if fraction > 0 and len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        held.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def stratified_subset(y: npt.NDArray[np.int64], n: int, seed: int) -> npt.NDArray[np.int64]:
    """Indices of about `n` examples with the class proportions of `y`."""
    if n >= len(y):
        return np.arange(len(y))
    _, keep = stratified_split(y, n / len(y), seed)
    return keep


def shift_images(
    x: npt.NDArray[np.uint8], max_shift: int, seed: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Translate each image by a random (dy, dx) in [-max_shift, max_shift], zero-filled."""
    rng = np.random.default_rng(seed)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(x), 2))
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    for i, (dy, dx) in enumerate(shifts):
        src_y = slice(max(0, -dy), min(h, h - dy))
        dst_y = slice(max(0, dy), min(h, h + dy))
        src_x = slice(max(0, -dx), min(w, w - dx))
        dst_x = slice(max(0, dx), min(w, w + dx))
        out[i, dst_y, dst_x] = x[i, src_y, src_x]
    return out, shifts.astype(np.int64)
