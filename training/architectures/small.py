"""Small classic networks: the test-sized CNN, the dense baseline and the lectures' CNNs."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from training.architectures import register


def _inputs(input_shape: tuple[int, int, int]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input(shape=input_shape, name="image")
    return inputs, layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)


def _classifier(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    # float32 softmax even under a mixed-precision policy (stable loss, exportable probs).
    return layers.Dense(num_classes, activation="softmax", name="classifier", dtype="float32")(x)


@register("tiny_cnn")
def tiny_cnn(
    input_shape: tuple[int, int, int], num_classes: int, filters: int = 8, embedding_dim: int = 32
) -> keras.Model:
    """Conv8 -> MaxPool -> Conv16 -> MaxPool -> Dense(embedding) -> softmax (~50k params at 28x28)."""
    inputs, x = _inputs(input_shape)
    x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(filters * 2, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(embedding_dim, activation="relu", name="embedding")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="tiny_cnn")


@register("mlp")
def mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    hidden_units: Sequence[int] = (256,),
    embedding_dim: int = 128,
    dropout: float = 0.3,
) -> keras.Model:
    """Dense baseline: Flatten -> Dense layers -> Dense(embedding) -> Dropout -> softmax.

    Every pixel position gets its own weights, so nothing it learns at one place carries over
    to another: the point of comparison for the CNNs.
    """
    inputs, x = _inputs(input_shape)
    x = layers.Flatten()(x)
    for i, units in enumerate(hidden_units):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(embedding_dim, activation="relu", name="embedding")(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="mlp")


@register("lecture_cnn")
def lecture_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    filters: int = 32,
    embedding_dim: int = 128,
    conv_dropout: float = 0.25,
    dropout: float = 0.5,
) -> keras.Model:
    """The lecture's CNN: Conv32 -> MaxPool -> Dropout -> Dense128 (embedding) -> Dropout -> softmax."""
    inputs, x = _inputs(input_shape)
    x = layers.Conv2D(filters, 3, activation="relu", name="conv")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Dropout(conv_dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(embedding_dim, activation="relu", name="embedding")(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="lecture_cnn")


@register("bird_cnn")
def bird_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    embedding_dim: int = 512,
    dropout: float = 0.5,
) -> keras.Model:
    """The bird lecture's CNN: Conv32 + pool, Conv64, Conv64 + pool, Dense512 (embedding), dropout."""
    inputs, x = _inputs(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(embedding_dim, activation="relu", name="embedding")(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="bird_cnn")
