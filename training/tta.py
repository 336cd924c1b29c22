"""Test-time augmentation inside the graph: average the prediction for an image and its mirror."""

from __future__ import annotations

from typing import Any

import keras

from training.config import ScratchConfig


@keras.saving.register_keras_serializable(package="imgclass")
class HorizontalFlip(keras.layers.Layer):
    """Mirror NHWC images left-right, always (unlike RandomFlip, which is training-only)."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def has_flip_tta(model: keras.Model) -> bool:
    return any(isinstance(layer, HorizontalFlip) for layer in model.layers)


def with_flip_tta(model: keras.Model) -> keras.Model:
    """probs = mean(model(x), model(mirror(x))); `embedding` = mean of the two embeddings.

    The result is flip-invariant and still has one input, the softmax as its first output and
    a layer named `embedding` (also its second output, so that it stays in the graph), so it
    exports like any architecture: one ONNX graph, no server-side logic.
    """
    inner = keras.Model(
        model.inputs, [model.outputs[0], model.get_layer("embedding").output], name="backbone"
    )
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    p1, e1 = inner(inputs)
    p2, e2 = inner(HorizontalFlip(name="mirror")(inputs))
    probs = keras.layers.Average(name="probs_mean")([p1, p2])
    embedding = keras.layers.Average(name="embedding")([e1, e2])
    return keras.Model(inputs, [probs, embedding], name=f"{model.name}_flip_tta")


def for_export(model: keras.Model, cfg: ScratchConfig) -> keras.Model:
    """The model as it is evaluated and shipped under `cfg` (wrapped once, if configured)."""
    if cfg.model.flip_tta and not has_flip_tta(model):
        return with_flip_tta(model)
    return model
