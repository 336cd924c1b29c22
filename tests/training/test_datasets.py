"""make_datasets: splits, one-hot labels, augmentation only on training batches, mixup, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from training.config import ScratchConfig
from training.data import BadData
from training.datasets import class_weights, make_datasets


def small_config(**overrides: object) -> ScratchConfig:
    raw: dict[str, object] = {
        "name": "pipe",
        "seed": 3,
        "data": {"source": "mnist", "val_fraction": 0.1},
        "input": {"height": 28, "width": 28, "channels": 1, "color": "gray"},
        "model": {"architecture": "tiny_cnn"},
        "train": {"batch_size": 100},
    }
    for key, value in overrides.items():
        section = raw.setdefault(key, {})
        if isinstance(section, dict) and isinstance(value, dict):
            section.update(value)
        else:
            raw[key] = value
    return ScratchConfig.model_validate(raw)


def _first_batch(ds):  # type: ignore[no-untyped-def]
    return [np.asarray(t) for t in next(iter(ds))]


def test_splits_and_batches(mnist_small_dir: Path) -> None:
    data = make_datasets(small_config(), mnist_small_dir)
    a = data.arrays
    sizes = a.sizes()
    # 10% of each class, rounded per class.
    assert sizes["train"] + sizes["val"] == 900 and abs(sizes["val"] - 90) <= 5
    assert sizes["test"] == 300
    assert np.bincount(a.y_val, minlength=10).min() >= 5  # stratified: every digit present
    assert a.class_names == tuple("0123456789") and a.test_split == "test"
    assert a.x_test_raw is not None and a.x_test_raw.dtype == np.uint8
    x, y = _first_batch(data.train)
    assert x.shape == (100, 28, 28, 1) and x.dtype == np.float32 and x.max() > 200
    assert y.shape == (100, 10) and np.allclose(y.sum(axis=1), 1)
    assert data.steps_per_epoch == 9
    # Validation batches are the arrays themselves, in order, every time.
    xv, yv = _first_batch(data.val)
    np.testing.assert_array_equal(xv, a.x_val[:100].astype(np.float32))
    np.testing.assert_array_equal(yv.argmax(1), a.y_val[:100])


def test_augmentation_changes_training_images_only(mnist_small_dir: Path) -> None:
    cfg = small_config(augment={"translate": 0.2, "rotation": 0.05, "contrast": 0.2})
    data = make_datasets(cfg, mnist_small_dir)
    first = [np.asarray(x) for x, _ in data.train]
    second = [np.asarray(x) for x, _ in data.train]
    raw = data.arrays.x_train.astype(np.float32)
    flat = np.concatenate(first)
    # Augmented: no training image equals any raw training image (shuffled, so compare sets).
    raw_sums = set(np.round(raw.reshape(len(raw), -1).sum(1), 1))
    changed = np.mean(
        [round(float(s), 1) not in raw_sums for s in flat.reshape(len(flat), -1).sum(1)]
    )
    assert changed > 0.9
    # Different random transforms (and order) each epoch.
    assert not np.array_equal(first[0], second[0])
    xv, _ = _first_batch(data.val)
    np.testing.assert_array_equal(xv, data.arrays.x_val[:100].astype(np.float32))


def test_mixup_blends_labels(mnist_small_dir: Path) -> None:
    data = make_datasets(small_config(augment={"mixup_alpha": 0.4}), mnist_small_dir)
    _, y = _first_batch(data.train)
    assert np.allclose(y.sum(axis=1), 1, atol=1e-5)
    assert (np.count_nonzero(y > 1e-3, axis=1) == 2).mean() > 0.5


def test_balanced_class_weights() -> None:
    y = np.array([0] * 90 + [1] * 10, dtype=np.int64)
    w = class_weights(y, 2)
    assert w[1] == pytest.approx(9 * w[0]) and (w * np.bincount(y)).sum() == pytest.approx(100)


def test_folder_source_gets_stratified_held_out_test(image_folder: Path) -> None:
    cfg = small_config(
        data={"source": "folder", "val_fraction": 0.25, "test_fraction": 0.25},
        input={"height": 32, "width": 32, "channels": 3, "color": "rgb"},
    )
    data = make_datasets(cfg, image_folder)
    a = data.arrays
    assert a.class_names == ("dark", "light") and a.test_split == "held-out"
    assert a.sizes() == {"train": 14, "val": 4, "test": 6}  # 12 per class: 3 test, 2 val
    assert np.bincount(a.y_test).tolist() == [3, 3] and a.x_test_raw is None


def test_data_dir_wins_over_the_configs_path(image_folder: Path, tmp_path: Path) -> None:
    """Round 44: a scratch config with data.path trained on that folder whatever --data-dir
    said, while its card named the --data-dir (the transfer recipe took --data-dir)."""
    other = tmp_path / "other"
    for cls in ("a", "b"):
        (other / cls).mkdir(parents=True)
        for i in range(6):
            pixels = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(other / cls / f"{i}.png")
    cfg = small_config(
        data={"source": "folder", "path": str(other), "val_fraction": 0.25, "test_fraction": 0.25},
        input={"height": 32, "width": 32, "channels": 3, "color": "rgb"},
    )
    assert make_datasets(cfg).arrays.class_names == ("a", "b")
    assert make_datasets(cfg, image_folder).arrays.class_names == ("dark", "light")


def test_array_source_must_match_input_size(mnist_small_dir: Path) -> None:
    cfg = small_config(input={"height": 32, "width": 32, "channels": 1, "color": "gray"})
    with pytest.raises(ValueError, match="set input height/width/channels"):
        make_datasets(cfg, mnist_small_dir)


def test_resolved_yaml_is_what_trains(tmp_path: Path) -> None:
    cfg = small_config(augment={"translate": 0.1})
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert yaml.safe_load(path.read_text())["augment"]["translate"] == 0.1


def test_training_arrays_get_the_servers_polarity_policy() -> None:
    """With `invert: auto` the training images pass the same per-image test as uploads: only
    the one with a light border is inverted (what the server would do to it)."""
    from training.datasets import _match_spec

    dark = np.zeros((2, 28, 28, 1), np.uint8)
    dark[:, 10:18, 10:18] = 200
    light = np.full((1, 28, 28, 1), 230, np.uint8)
    x = np.concatenate([dark, light])
    auto = small_config(input={"invert": "auto"})
    out = _match_spec(x, auto, "test")
    np.testing.assert_array_equal(out[:2], dark)
    np.testing.assert_array_equal(out[2], 255 - light[0])
    always = _match_spec(x, small_config(input={"invert": True}), "test")
    np.testing.assert_array_equal(always, 255 - x)
    np.testing.assert_array_equal(_match_spec(x, small_config(), "test"), x)


def test_a_class_with_too_few_pictures_that_decode_is_refused(image_folder: Path) -> None:
    """Round 44: a class of 3 files, 2 truncated, was trained on one picture, never tested,
    and shipped with n=0 in its card (the transfer recipe refused the same folder)."""
    odd = image_folder / "reindeer"
    odd.mkdir()
    (odd / "a.png").write_bytes((image_folder / "dark" / "img_0.png").read_bytes())
    for name in ("b.jpg", "c.jpg"):
        (odd / name).write_bytes(b"\xff\xd8\xff\xe0" + name.encode() * 4)  # two files
    cfg = small_config(
        data={"source": "folder", "val_fraction": 0.25, "test_fraction": 0.25},
        input={"height": 32, "width": 32, "channels": 3, "color": "rgb"},
    )
    with pytest.raises(BadData, match=r"too few pictures that decode in \['reindeer'\]"):
        make_datasets(cfg, image_folder)
