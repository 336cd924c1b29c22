"""training/data.py: loaders on small files in the real formats (IDX, IDX.gz, CIFAR pickles,
image folders), the one folder rule, the one split rule, the data-root setting."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.bundle import InputSpec
from tests.training.conftest import synthetic_cifar, write_cifar, write_idx, write_idx_set
from training.data import (
    BadData,
    DataNotFound,
    class_weights,
    data_root,
    list_class_folder,
    load_cifar10,
    load_image_folder,
    load_images,
    load_mnist,
    read_idx,
    shift_images,
    stratified_split,
    stratified_subset,
)

GRAY28 = InputSpec(height=28, width=28, channels=1, color="gray")


@pytest.mark.parametrize("gz", [False, True], ids=["idx", "idx.gz"])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=7).astype(np.int64)
    write_idx_set(tmp_path / "mnist", x, y, x[:3], y[:3], gz=gz)
    data = load_mnist(tmp_path / "mnist")
    assert data.x_train.shape == (7, 28, 28, 1) and data.x_test.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(data.x_train[..., 0], x)
    np.testing.assert_array_equal(data.y_train, y)
    assert data.class_names == tuple("0123456789")


def test_idx_rejects_wrong_magic_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x02" + b"\x00" * 8)  # float type
    with pytest.raises(ValueError, match="unsigned-byte"):
        read_idx(bad)
    short = write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8), gz=False)
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(ValueError, match="header says"):
        read_idx(short)


def test_missing_sets_name_the_fetch_script(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match="scripts/fetch-data"):
        load_mnist(tmp_path / "nowhere")
    (tmp_path / "partial").mkdir()
    with pytest.raises(DataNotFound, match="t10k-images"):
        write_idx(
            tmp_path / "partial" / "train-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8), False
        )
        write_idx(tmp_path / "partial" / "train-labels-idx1-ubyte", np.zeros(1, np.uint8), False)
        load_mnist(tmp_path / "partial")
    with pytest.raises(DataNotFound, match="scripts/fetch-data"):
        load_cifar10(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataNotFound, match="scripts/fetch-data"):
        load_image_folder(tmp_path / "no-folder", GRAY28)


def test_cifar_batches(cifar_dir: Path) -> None:
    data = load_cifar10(cifar_dir)
    x, y = synthetic_cifar(500, seed=1)
    assert data.x_train.shape == (500, 32, 32, 3) and data.x_test.shape == (200, 32, 32, 3)
    # Same pixels in the same channel order after the R/G/B-plane round trip.
    np.testing.assert_array_equal(data.x_train, x)
    np.testing.assert_array_equal(data.y_train, y)
    assert data.class_names[2] == "bird" and len(data.class_names) == 10
    # The parent folder works too (where the archive was unpacked).
    assert load_cifar10(cifar_dir.parent).x_test.shape == (200, 32, 32, 3)


def test_cifar_one_vs_rest(cifar_dir: Path) -> None:
    data = load_cifar10(cifar_dir, binary_positive="bird")
    _, y = synthetic_cifar(500, seed=1)
    assert data.class_names == ("not_bird", "bird")
    np.testing.assert_array_equal(data.y_train, (y == 2).astype(np.int64))
    with pytest.raises(ValueError, match="not a CIFAR-10 class"):
        load_cifar10(cifar_dir, binary_positive="penguin")


def test_cifar_pickle_cannot_run_code(tmp_path: Path, cifar_dir: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    x, y = synthetic_cifar(20, seed=3)
    write_cifar(folder, (x, y), (x, y))

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar10(folder)


def test_image_folder_mixed_formats_and_corrupt_file(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = InputSpec(height=32, width=32, channels=3, color="rgb")
    with caplog.at_level(logging.WARNING, logger="training.data"):
        x, y, names = load_image_folder(image_folder, spec)
    assert names == ("dark", "light")
    assert x.shape == (24, 32, 32, 3) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [12, 12]
    warned = caplog.text
    assert "corrupt.jpg" in warned and "notes.txt" in warned
    # Decoded like the server: pixel values kept in 0..255, classes clearly apart.
    assert x[y == 0].mean() < 80 < 180 < x[y == 1].mean()
    gray, _, _ = load_image_folder(image_folder, GRAY28)
    assert gray.shape == (24, 28, 28, 1)


def test_stratified_split_keeps_proportions() -> None:
    y = np.repeat(np.arange(4), [100, 50, 30, 20]).astype(np.int64)
    rest, held = stratified_split(y, 0.1, seed=7)
    assert len(np.intersect1d(rest, held)) == 0 and len(rest) + len(held) == len(y)
    assert np.bincount(y[held]).tolist() == [10, 5, 3, 2]
    again, _ = stratified_split(y, 0.1, seed=7)
    np.testing.assert_array_equal(rest, again)
    sub = stratified_subset(y, 40, seed=1)
    assert np.bincount(y[sub]).tolist() == [20, 10, 6, 4]


def test_shift_images_moves_pixels() -> None:
    x = np.zeros((50, 28, 28), np.uint8)
    x[:, 14, 14] = 255
    shifted, shifts = shift_images(x, 6, seed=0)
    for img, (dy, dx) in zip(shifted, shifts, strict=True):
        assert img[14 + dy, 14 + dx] == 255 and img.sum() == 255
    assert np.abs(shifts).max() <= 6 and len({tuple(s) for s in shifts}) > 10


def test_the_folder_rule_is_content_not_suffix(image_folder: Path) -> None:
    from tests.training.conftest import encode

    img = __import__("PIL.Image", fromlist=["Image"]).new("RGB", (9, 9), (200, 200, 200))
    (image_folder / "light" / "odd_suffix.dat").write_bytes(encode(img, "PNG"))
    (image_folder / "light" / ".hidden.png").write_bytes(encode(img, "PNG"))
    (image_folder / ".cache").mkdir()
    (image_folder / ".cache" / "x.png").write_bytes(encode(img, "PNG"))
    names, files = list_class_folder(image_folder)
    assert names == ("dark", "light")
    light = [p.name for p in files[1]]
    assert "odd_suffix.dat" in light and "notes.txt" not in light and ".hidden.png" not in light
    # corrupt.jpg starts like a JPEG: listed, then skipped when it fails to decode
    assert "corrupt.jpg" in [p.name for p in files[0]]
    x, kept = load_images(files[0], GRAY28)
    assert len(kept) == len(files[0]) - 1 and x.shape == (len(kept), 28, 28, 1)
    assert files[0][next(i for i in range(len(files[0])) if i not in kept)].name == "corrupt.jpg"
    assert list_class_folder(image_folder, limit_per_class=4)[1][0] == files[0][:4]


def test_the_folder_rule_explains_bad_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match="one subfolder per class"):
        list_class_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(BadData, match="at least 2 class subfolders"):  # the CLI's one-liner
        list_class_folder(tmp_path)


def test_stratified_split_several_held_out_parts() -> None:
    y = np.repeat(np.arange(3), [20, 10, 3]).astype(np.int64)
    rest, test, val = stratified_split(y, [0.25, 0.15], seed=0)
    parts = [rest, test, val]
    assert sum(len(p) for p in parts) == len(y)
    assert len(np.unique(np.concatenate(parts))) == len(y)  # disjoint
    assert np.bincount(y[test], minlength=3).tolist() == [5, 2, 1]  # round(n * 0.25), >= 1
    assert np.bincount(y[val], minlength=3).tolist() == [3, 2, 1]  # round(n * 0.15), >= 1
    assert np.bincount(y[rest], minlength=3).tolist() == [12, 6, 1]  # every class keeps one
    # the first held-out part is the same as a one-part split with the same seed
    np.testing.assert_array_equal(test, stratified_split(y, 0.25, seed=0)[1])
    tiny = np.array([0, 0, 1], np.int64)
    r, _h = stratified_split(tiny, 0.4, seed=0)
    assert sorted(y_ for y_ in tiny[r]) == [0, 1]  # the single class-1 example stays in rest


def test_class_weights_balanced() -> None:
    w = class_weights(np.array([0, 0, 0, 1], np.int64), 3)
    assert w.tolist() == pytest.approx([4 / 9, 4 / 3, 4 / 3])  # a missing class counts as 1


def test_training_data_dir_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IMGCLASS_DATA", raising=False)
    monkeypatch.setenv("IMGCLASS_TRAINING_DATA_DIR", str(tmp_path / "new"))
    assert data_root() == tmp_path / "new"
    monkeypatch.delenv("IMGCLASS_TRAINING_DATA_DIR")
    monkeypatch.setenv("IMGCLASS_DATA", str(tmp_path / "old"))
    with pytest.warns(FutureWarning, match="IMGCLASS_TRAINING_DATA_DIR"):
        assert data_root() == tmp_path / "old"


def test_the_folder_rule_ignores_macos_zip_debris(tmp_path: Path) -> None:
    """A folder unzipped from a macOS zip has __MACOSX/ beside the classes (and inside them);
    it was taken for a class. The server's teach upload ignores it too."""
    for cls in ("cat", "dog", "__MACOSX", "__MACOSX/cat"):
        (tmp_path / cls).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "__MACOSX").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "__MACOSX" / "x.png")
    classes, files = list_class_folder(tmp_path)
    assert classes == ("cat", "dog") and [len(f) for f in files] == [3, 3]


def test_one_picture_in_two_classes_is_named(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Round 44: the same bytes in two classes were used under both labels without a word."""
    copy = image_folder / "light" / "also-dark.png"
    copy.write_bytes((image_folder / "dark" / "img_0.png").read_bytes())
    with caplog.at_level(logging.WARNING, logger="training.data"):
        _, files = list_class_folder(image_folder)
    assert "also-dark.png has the same bytes as" in caplog.text
    assert "one picture, two classes (light and dark)" in caplog.text
    assert copy in files[1]  # kept: which class is right is the user's call
