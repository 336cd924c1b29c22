"""make_datasets(cfg): train/val/test tf.data pipelines (cached, prefetched) and class names."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from app.imaging import border_is_light, to_array
from training.config import AugmentConfig, ScratchConfig
from training.data import (
    ArraySplits,
    BadData,
    class_weights,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    stratified_split,
    stratified_subset,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitArrays:
    """Numpy copies of the three splits (the pipelines are built from these)."""

    x_train: npt.NDArray[Any]
    y_train: npt.NDArray[np.int64]
    x_val: npt.NDArray[Any]
    y_val: npt.NDArray[np.int64]
    x_test: npt.NDArray[Any]
    y_test: npt.NDArray[np.int64]
    class_names: tuple[str, ...]
    dataset: str  # display name, e.g. "Fashion-MNIST"
    test_split: str  # "test" (official) or "held-out" (folders)
    # Raw uint8 test images for array sources (what a client would upload); None for folders,
    # whose images already went through app.imaging.prepare.
    x_test_raw: npt.NDArray[np.uint8] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


@dataclass(frozen=True)
class Datasets:
    train: tf.data.Dataset  # (x float32, one-hot y[, sample weight]), shuffled, augmented
    val: tf.data.Dataset  # (x, one-hot y)
    test: tf.data.Dataset  # (x, one-hot y)
    class_names: tuple[str, ...]
    arrays: SplitArrays
    steps_per_epoch: int


def _source_arrays(cfg: ScratchConfig, data_dir: Path | None) -> ArraySplits:
    d = cfg.data
    folder = d.path if d.path is not None else None
    # --data-dir wins over the config's data.path, as for the transfer recipe (round 44: a
    # scratch run trained on data.path while its card named the --data-dir given)
    if data_dir is not None:
        sub = {"fashion_mnist": "fashion-mnist", "mnist": "mnist", "cifar10": "cifar-10-batches-py"}
        folder = data_dir / sub[d.source] if d.source in sub else data_dir
    if d.source == "fashion_mnist":
        return load_fashion_mnist(folder)
    if d.source == "mnist":
        return load_mnist(folder)
    if d.source == "cifar10":
        return load_cifar10(folder, d.binary_positive)
    if folder is None:
        raise BadData("data.source 'folder' needs data.path (or --data-dir)")
    if d.test_fraction <= 0:
        raise BadData("an image folder has no official test split: set data.test_fraction > 0")
    x, y, names = load_image_folder(folder, cfg.input)
    rest, test = stratified_split(y, d.test_fraction, cfg.seed + 1)
    return ArraySplits(x[rest], y[rest], x[test], y[test], names)


def _match_spec(x: npt.NDArray[Any], cfg: ScratchConfig, source: str) -> npt.NDArray[Any]:
    """Array sources hold raw 0..255 pixels: apply the bundle's pixel policy like the server."""
    spec = cfg.input
    if x.shape[1:] != (spec.height, spec.width, spec.channels):
        raise BadData(
            f"{source} images are {x.shape[1:]} but input is "
            f"{(spec.height, spec.width, spec.channels)}; set input height/width/channels to match"
        )
    # The server's polarity policy, per image (see InputSpec.invert; "auto" is gray-only).
    if spec.invert == "auto":
        flip = border_is_light(x[..., 0])
        if flip.any():
            x = np.where(flip[:, None, None, None], 255 - x, x).astype(x.dtype)
    elif spec.invert:
        x = 255 - x
    default = spec.pixel_range == (0.0, 255.0) and spec.normalization.in_graph
    # to_array is written for one image but only uses broadcasting ops on the last axis.
    return x if default else to_array(x, spec)  # type: ignore[arg-type]


def load_arrays(cfg: ScratchConfig, data_dir: Path | None = None) -> SplitArrays:
    """Read the configured source and cut train/val (stratified) and test."""
    d = cfg.data
    src = _source_arrays(cfg, data_dir)
    raw_test = src.x_test if d.source != "folder" else None
    if d.source != "folder":
        src = ArraySplits(
            _match_spec(src.x_train, cfg, d.source),
            src.y_train,
            _match_spec(src.x_test, cfg, d.source),
            src.y_test,
            src.class_names,
        )
    train_idx, val_idx = stratified_split(src.y_train, d.val_fraction, cfg.seed)
    if d.limit_train is not None:
        train_idx = train_idx[stratified_subset(src.y_train[train_idx], d.limit_train, cfg.seed)]
    test_idx = np.arange(len(src.y_test))
    if d.limit_test is not None:
        test_idx = stratified_subset(src.y_test, d.limit_test, cfg.seed)
    arrays = SplitArrays(
        x_train=src.x_train[train_idx],
        y_train=src.y_train[train_idx],
        x_val=src.x_train[val_idx],
        y_val=src.y_train[val_idx],
        x_test=src.x_test[test_idx],
        y_test=src.y_test[test_idx],
        class_names=src.class_names,
        dataset=d.display_name,
        test_split="test" if d.source != "folder" else "held-out",
        x_test_raw=raw_test[test_idx] if raw_test is not None else None,
    )
    logger.info("%s: %s, %d classes", arrays.dataset, arrays.sizes(), arrays.num_classes)
    return arrays


def augmentation_layers(aug: AugmentConfig, seed: int) -> keras.Sequential | None:
    """Random transforms as Keras preprocessing layers (training-only, never exported)."""
    steps: list[keras.layers.Layer] = []
    if aug.flip_horizontal:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if aug.translate:
        steps.append(
            keras.layers.RandomTranslation(
                aug.translate, aug.translate, fill_mode=aug.fill_mode, seed=seed + 1
            )
        )
    if aug.rotation:
        steps.append(
            keras.layers.RandomRotation(aug.rotation, fill_mode=aug.fill_mode, seed=seed + 2)
        )
    if aug.zoom:
        steps.append(keras.layers.RandomZoom(aug.zoom, fill_mode=aug.fill_mode, seed=seed + 3))
    if aug.contrast:
        steps.append(keras.layers.RandomContrast(aug.contrast, value_range=(0, 255), seed=seed + 4))
    if aug.erasing:
        steps.append(
            keras.layers.RandomErasing(
                factor=(aug.erasing, aug.erasing), scale=(0.02, 0.2), fill_value=0.0, seed=seed + 5
            )
        )
    return keras.Sequential(steps, name="augment") if steps else None


def _mixup(alpha: float, seed: int) -> Any:
    def mix(x: tf.Tensor, y: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        n = tf.shape(x)[0]
        g1 = tf.random.gamma([n], alpha, seed=seed)
        g2 = tf.random.gamma([n], alpha, seed=seed + 1)
        lam = g1 / (g1 + g2)
        perm = tf.random.shuffle(tf.range(n), seed=seed + 2)
        lx = tf.reshape(lam, [-1, 1, 1, 1])
        ly = tf.reshape(lam, [-1, 1])
        x = lx * x + (1.0 - lx) * tf.gather(x, perm)
        y = ly * y + (1.0 - ly) * tf.gather(y, perm)
        if rest:
            w = rest[0]
            return x, y, lam * w + (1.0 - lam) * tf.gather(w, perm)
        return x, y

    return mix


def _eval_ds(x: npt.NDArray[Any], y: npt.NDArray[np.int64], k: int, bs: int, cache: bool) -> Any:
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if cache:
        ds = ds.cache()
    ds = ds.batch(bs).map(
        lambda a, b: (tf.cast(a, tf.float32), tf.one_hot(b, k)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def make_datasets(cfg: ScratchConfig, data_dir: Path | None = None) -> Datasets:
    """Train (shuffled, augmented, optional mixup and class weights), val and test pipelines."""
    arrays = load_arrays(cfg, data_dir)
    k, bs, seed = arrays.num_classes, cfg.train.batch_size, cfg.seed
    weights = class_weights(arrays.y_train, k) if cfg.train.class_weight == "balanced" else None
    ds = tf.data.Dataset.from_tensor_slices((arrays.x_train, arrays.y_train))
    if cfg.data.cache:
        ds = ds.cache()
    ds = ds.shuffle(len(arrays.y_train), seed=seed, reshuffle_each_iteration=True).batch(bs)

    def to_float(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, ...]:
        onehot = tf.one_hot(y, k)
        if weights is not None:
            return tf.cast(x, tf.float32), onehot, tf.gather(tf.constant(weights), y)
        return tf.cast(x, tf.float32), onehot

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    augment = augmentation_layers(cfg.augment, seed)
    if augment is not None:
        ds = ds.map(
            lambda x, *rest: (augment(x, training=True), *rest),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if cfg.augment.mixup_alpha > 0:
        ds = ds.map(_mixup(cfg.augment.mixup_alpha, seed), num_parallel_calls=tf.data.AUTOTUNE)
    train = ds.prefetch(tf.data.AUTOTUNE)
    return Datasets(
        train=train,
        val=_eval_ds(arrays.x_val, arrays.y_val, k, bs, cfg.data.cache),
        test=_eval_ds(arrays.x_test, arrays.y_test, k, bs, cfg.data.cache),
        class_names=arrays.class_names,
        arrays=arrays,
        steps_per_epoch=int(np.ceil(len(arrays.y_train) / bs)),
    )
