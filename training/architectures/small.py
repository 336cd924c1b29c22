"""Small CNNs that train in seconds: used by tests and quick experiments."""

from __future__ import annotations

import keras
from keras import layers

from training.architectures import register


@register("tiny_cnn")
def tiny_cnn(
    input_shape: tuple[int, int, int], num_classes: int, filters: int = 8, embedding_dim: int = 32
) -> keras.Model:
    """Conv8 -> MaxPool -> Conv16 -> MaxPool -> Dense(embedding) -> softmax (~50k params at 28x28)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(filters * 2, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(embedding_dim, activation="relu", name="embedding")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")
