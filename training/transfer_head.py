"""The trainable parts of the `transfer` recipe: the softmax head on cached embeddings and the
optional fine-tune of the backbone's top blocks (TensorFlow)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from training.architectures.efficientnet_lite import (
    NUM_BLOCKS,
    block_layer_names,
    default_weights_path,
)
from training.config import TransferConfig
from training.data import class_weights


def backbone_key(cfg: TransferConfig) -> str:
    """Changes whenever the embedding of a file could change: weights, architecture, input."""
    weights = cfg.backbone.weights
    wpath = default_weights_path() if weights == "imagenet" else Path(weights)
    ident = {
        "architecture": cfg.backbone.architecture,
        "weights_sha256": hashlib.sha256(wpath.read_bytes()).hexdigest(),
        "input": cfg.input.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def train_head(
    cfg: TransferConfig,
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.int64],
    x_val: npt.NDArray[np.float32],
    y_val: npt.NDArray[np.int64],
    num_classes: int,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Dropout + Dense softmax on cached embeddings (the same layers the full model ends with)."""
    h = cfg.head
    inputs = keras.Input(shape=(x_train.shape[1],), name="embedding_in")
    x = keras.layers.Dropout(h.dropout, name="dropout")(inputs)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="predictions")(x)
    head = keras.Model(inputs, outputs, name="head")
    head.compile(
        optimizer=keras.optimizers.Adam(h.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    has_val = len(y_val) > 0
    monitor = "val_loss" if has_val else "loss"
    stop = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=h.early_stopping_patience, restore_best_weights=True
    )
    # Class weights as per-sample weights; tf.data (cached) keeps per-epoch overhead to ~ms
    # where numpy inputs cost ~0.2 s per epoch in Keras 3.
    sw = (
        class_weights(y_train, num_classes)[y_train]
        if h.class_weight == "balanced"
        else np.ones(len(y_train), np.float32)
    )
    train = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train, sw))
        .cache()
        .shuffle(len(y_train), seed=cfg.seed, reshuffle_each_iteration=True)
        .batch(h.batch_size)
    )
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256).cache() if has_val else None
    hist = head.fit(
        train, validation_data=val, epochs=h.epochs, callbacks=[stop], shuffle=False, verbose=0
    )
    return head, {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def fine_tune(
    cfg: TransferConfig,
    model: keras.Model,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    num_classes: int,
) -> dict[str, list[float]]:
    """Unfreeze the top `blocks` MBConv blocks + head conv + classifier; BatchNorm stays frozen
    (inference mode, moving statistics untouched), which small data sets need."""
    ft = cfg.fine_tune
    unfrozen = set(block_layer_names(model, NUM_BLOCKS - ft.blocks)) | {"logits"}
    for layer in model.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = layer.name in unfrozen and not is_bn
    model.compile(
        optimizer=keras.optimizers.Adam(ft.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # Random left-right flips, the same augmentation the head saw through the flip embeddings.
    rng = np.random.default_rng(cfg.seed)
    flip = rng.random(len(x)) < 0.5
    x_aug = np.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
    weights = (
        dict(enumerate(class_weights(y, num_classes).tolist()))
        if cfg.head.class_weight == "balanced"
        else None
    )
    hist = model.fit(
        x_aug, y, epochs=ft.epochs, batch_size=ft.batch_size, class_weight=weights, verbose=0
    )
    for layer in model.layers:
        layer.trainable = True
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}
