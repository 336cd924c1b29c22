"""Current small CNNs: conv-BN-ReLU stages (VGG-style or residual), global pooling, dropout, L2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import keras
from keras import layers

from training.architectures import register
from training.architectures.small import _classifier, _inputs


def _reg(l2: float) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(l2) if l2 > 0 else None


def _conv_bn_relu(
    x: keras.KerasTensor, filters: int, l2: float, name: str, strides: int = 1
) -> keras.KerasTensor:
    x = layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,  # BN's beta is the bias
        kernel_regularizer=_reg(l2),
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _head(
    x: keras.KerasTensor,
    num_classes: int,
    pooling: Literal["avg", "flatten"],
    embedding_dim: int,
    dropout: float,
    l2: float,
) -> keras.KerasTensor:
    x = layers.GlobalAveragePooling2D(name="gap")(x) if pooling == "avg" else layers.Flatten()(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(
        embedding_dim, activation="relu", kernel_regularizer=_reg(l2), name="embedding"
    )(x)
    x = layers.Dropout(dropout / 2, name="embedding_dropout")(x)
    return _classifier(x, num_classes)


@register("modern_cnn")
def modern_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    widths: Sequence[int] = (32, 64, 128),
    convs_per_stage: Sequence[int] | int = 2,
    pooling: Literal["avg", "flatten"] = "avg",
    embedding_dim: int = 256,
    dropout: float = 0.3,
    l2: float = 0.0,
) -> keras.Model:
    """VGG-style stages of conv-BN-ReLU, max-pooling between stages, then pooling and a dense head."""
    reps = [convs_per_stage] * len(widths) if isinstance(convs_per_stage, int) else convs_per_stage
    if len(reps) != len(widths):
        raise ValueError("convs_per_stage needs one entry per stage width")
    inputs, x = _inputs(input_shape)
    for stage, (width, n) in enumerate(zip(widths, reps, strict=True)):
        if stage > 0:
            x = layers.MaxPooling2D(name=f"pool{stage}")(x)
        for j in range(n):
            x = _conv_bn_relu(x, width, l2, f"s{stage + 1}_{j + 1}")
    outputs = _head(x, num_classes, pooling, embedding_dim, dropout, l2)
    return keras.Model(inputs, outputs, name="modern_cnn")


def _residual_block(
    x: keras.KerasTensor, filters: int, strides: int, l2: float, name: str
) -> keras.KerasTensor:
    shortcut = x
    y = _conv_bn_relu(x, filters, l2, f"{name}_a", strides=strides)
    y = layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_regularizer=_reg(l2),
        name=f"{name}_b_conv",
    )(y)
    y = layers.BatchNormalization(name=f"{name}_b_bn")(y)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters,
            1,
            strides=strides,
            use_bias=False,
            kernel_regularizer=_reg(l2),
            name=f"{name}_proj",
        )(shortcut)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


@register("small_resnet")
def small_resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    widths: Sequence[int] = (32, 64, 128),
    blocks_per_stage: int = 1,
    embedding_dim: int = 128,
    dropout: float = 0.3,
    l2: float = 1e-4,
) -> keras.Model:
    """ResNet-style: a conv-BN-ReLU stem, residual stages (stride 2 between them), GAP, dense head."""
    inputs, x = _inputs(input_shape)
    x = _conv_bn_relu(x, widths[0], l2, "stem")
    for stage, width in enumerate(widths):
        for b in range(blocks_per_stage):
            strides = 2 if stage > 0 and b == 0 else 1
            x = _residual_block(x, width, strides, l2, f"s{stage + 1}_b{b + 1}")
    outputs = _head(x, num_classes, "avg", embedding_dim, dropout, l2)
    return keras.Model(inputs, outputs, name="small_resnet")
