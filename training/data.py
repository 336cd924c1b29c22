"""Data sources: locating the raw files, reading them into numpy arrays, stratified splits.

TensorFlow-free (numpy, Pillow via app.imaging), so the serving-path evaluation can use it
without TensorFlow; the tf.data pipelines live in training/datasets.py.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from app.bundle import InputSpec
from app.errors import ServiceError
from app.imaging import ImageLimits, prepare, sniff_format

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


class DataNotFound(FileNotFoundError):
    """A data set is missing; the message names the command that fetches it."""


class BadData(ValueError):
    """Data that is there but cannot be used (too few classes or images, a wrong format);
    the message says what to change. The CLI prints it as one line."""


DATA_ENV = "IMGCLASS_TRAINING_DATA_DIR"
OLD_DATA_ENV = "IMGCLASS_DATA"  # deprecated: too close to the server's IMGCLASS_DATA_DIR


def data_root() -> Path:
    """Where scripts/fetch-data puts the training data ($IMGCLASS_TRAINING_DATA_DIR overrides;
    the old $IMGCLASS_DATA still works, with a deprecation warning)."""
    value = os.environ.get(DATA_ENV)
    if value is None and OLD_DATA_ENV in os.environ:
        warnings.warn(
            f"{OLD_DATA_ENV} is deprecated; set {DATA_ENV} instead",
            FutureWarning,  # shown by default (a DeprecationWarning was not, round 28)
            stacklevel=2,
        )
        value = os.environ[OLD_DATA_ENV]
    return Path(value) if value else PROJECT_ROOT / "data"


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
        raise BadData(f"{path}: not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise BadData(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(dims)) if dims else 0
    if data.size != expected:
        raise BadData(f"{path}: {data.size} bytes of data, header says {dims}")
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
        raise BadData(f"{folder}: image and label counts differ")
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
        raise BadData(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _cifar_batch(path: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    batch = _read_pickle(path)
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise BadData(f"{path}: expected N x 3072 data and N labels, got {data.shape}")
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
            raise BadData(f"binary_positive {binary_positive!r} is not a CIFAR-10 class {names}")
        pos = names.index(binary_positive)
        y_train = (y_train == pos).astype(np.int64)
        y_test = (y_test == pos).astype(np.int64)
        names = (f"not_{binary_positive}", binary_positive)
    return ArraySplits(x_train, y_train, x_test, y_test, names)


# --- Image folders ------------------------------------------------------------------------

# Fewer than this per class leaves no room for training, validation and test images.
MIN_IMAGES_PER_CLASS = 3


def _is_image(path: Path) -> bool:
    """The server's rule: the file's first bytes name a format it accepts (suffixes are not
    trusted). Files that fail to decode later are skipped by `load_images`."""
    with path.open("rb") as f:
        head = f.read(32)
    return sniff_format(head) is not None


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read 1 MiB at a time (the folder rule's order and the
    transfer recipe's embedding cache key)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _ignored(name: str) -> bool:
    """Hidden entries and macOS zip debris (__MACOSX/ holds ._name resource forks), as the
    server's teach upload ignores them; a folder unzipped on Linux has both."""
    return name.startswith(".") or name == "__MACOSX"


def list_class_folder(
    root: Path, limit_per_class: int | None = None
) -> tuple[tuple[str, ...], list[list[Path]]]:
    """Class names (sorted non-hidden subfolders) and their image files.

    The one folder rule of every recipe: any non-hidden file below a class folder whose
    content is an image format the server accepts; anything else is skipped with a warning
    naming it, and so is a second copy of the same bytes in a class (it could land in train
    and test at once). Each class's files are in the order of their content's sha256, so
    renaming or moving pictures never changes which split (or `limit_per_class`'s first N)
    they fall in: with sorted paths a rename moved pictures between train and test (round
    30). At least 2 classes with MIN_IMAGES_PER_CLASS images each."""
    if not root.is_dir():
        raise DataNotFound(
            f"{root} is not a folder; expected one subfolder per class, e.g. {root}/santa/*.jpg "
            f"and {root}/not_santa/*.jpg ({FETCH_HINT} for the project's own data sets)"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not _ignored(d.name))
    files: list[list[Path]] = []
    seen: dict[str, Path] = {}  # digest -> its file in an earlier class
    for c in classes:
        candidates = sorted(
            p
            for p in (root / c).rglob("*")
            if p.is_file() and not any(_ignored(part) for part in p.relative_to(root).parts)
        )
        by_digest: dict[str, Path] = {}
        for p in candidates:
            if not _is_image(p):
                logger.warning("skipping %s: not an image format the server accepts", p)
            elif (first := by_digest.setdefault(file_sha256(p), p)) != p:
                logger.warning("skipping %s: the same bytes as %s", p, first)
        for digest, p in by_digest.items():
            if (other := seen.setdefault(digest, p)) != p:
                # round 44: used under both labels without a word (taught, `teach` warns)
                logger.warning(
                    "%s has the same bytes as %s: one picture, two classes (%s and %s)",
                    p,
                    other,
                    c,
                    other.relative_to(root).parts[0],
                )
        images = [by_digest[d] for d in sorted(by_digest)]
        files.append(images[:limit_per_class] if limit_per_class is not None else images)
    too_few = [c for c, f in zip(classes, files, strict=True) if len(f) < MIN_IMAGES_PER_CLASS]
    if len(classes) < 2 or too_few:
        raise BadData(
            f"{root}: need at least 2 class subfolders with at least {MIN_IMAGES_PER_CLASS} "
            f"images each (found classes {classes}; too few images in {too_few})"
        )
    return tuple(classes), files


def load_images(
    paths: Sequence[Path], spec: InputSpec, limits: ImageLimits | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Image files -> model input through the server's own ingestion (app.imaging.prepare).

    Returns the arrays and the indices of `paths` they came from: a file the server would
    refuse is skipped with a warning naming it."""
    limits = limits or ImageLimits()
    arrays: list[npt.NDArray[np.float32]] = []
    kept: list[int] = []
    for i, path in enumerate(paths):
        try:
            arrays.append(prepare(path.read_bytes(), spec, limits).array)
        except (ServiceError, OSError) as exc:
            logger.warning("skipping %s: %s", path, getattr(exc, "detail", exc))
            continue
        kept.append(i)
    shape = (0, spec.height, spec.width, spec.channels)
    x = np.stack(arrays).astype(np.float32) if arrays else np.zeros(shape, np.float32)
    return x, np.asarray(kept, dtype=np.int64)


def load_image_folder(
    folder: Path, spec: InputSpec, limits: ImageLimits | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], tuple[str, ...]]:
    """A class folder decoded like the server does: (x, y, class names)."""
    classes, files = list_class_folder(folder)
    paths = [p for group in files for p in group]
    labels = np.asarray([i for i, group in enumerate(files) for _ in group], dtype=np.int64)
    x, kept = load_images(paths, spec, limits)
    y = labels[kept]
    counts = np.bincount(y, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise BadData(f"{folder}: no readable images for class(es) {empty}")
    # round 44: a class of 3 files, 2 truncated, was trained on one picture and never tested
    short = [c for c, n in zip(classes, counts, strict=True) if n < MIN_IMAGES_PER_CLASS]
    if short:
        raise BadData(
            f"{folder}: too few pictures that decode in {short}: each class needs at least "
            f"{MIN_IMAGES_PER_CLASS} (one each for training, validation and test); the "
            "warnings above name the files that could not be read"
        )
    return x, y, classes


# --- Splits -------------------------------------------------------------------------------


def stratified_split(
    y: npt.NDArray[np.int64], fractions: float | Sequence[float], seed: int
) -> list[npt.NDArray[np.int64]]:
    """Indices [rest, held_1, held_2, ...], each sorted: the one split rule of every recipe.

    Per class (in label order) the examples are shuffled with `seed`; held-out split i takes
    the next round(n * fractions[i]) of them (n = the class's size), at least one where the
    fraction is > 0 and at least two remain, and never the last one: every class keeps one
    example in `rest`."""
    fracs = [fractions] if isinstance(fractions, float | int) else list(fractions)
    rng = np.random.default_rng(seed)
    parts: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(len(fracs) + 1)]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        start = 0
        for i, f in enumerate(fracs):
            left = len(idx) - start
            n = round(len(idx) * f)
            n = min(max(n, 1), left - 1) if f > 0 and left >= 2 else min(n, max(left - 1, 0))
            parts[i + 1].append(idx[start : start + n])
            start += n
        parts[0].append(idx[start:])
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def class_weights(y: npt.NDArray[np.int64], num_classes: int) -> npt.NDArray[np.float32]:
    """'balanced' weights n / (k * n_c), as in scikit-learn (a missing class counts as 1)."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weights = len(y) / (num_classes * np.maximum(counts, 1))
    return weights.astype(np.float32)


def stratified_subset(y: npt.NDArray[np.int64], n: int, seed: int) -> npt.NDArray[np.int64]:
    """Indices of about `n` examples with the class proportions of `y`."""
    if n >= len(y):
        return np.arange(len(y))
    return stratified_split(y, n / len(y), seed)[1]


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
