"""Architecture registry: create_model(name, input_shape, num_classes, **kwargs).

Every architecture is a Functional Keras model taking float pixels in 0..255 (scaling is in
the graph), with a layer named ``embedding`` right before the softmax classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

Builder = Callable[..., keras.Model]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def available() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def create_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs: Any
) -> keras.Model:
    _import_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(_REGISTRY)}")
    model = _REGISTRY[name](input_shape=input_shape, num_classes=num_classes, **kwargs)
    model.get_layer("embedding")  # every architecture must expose one
    return model


def _import_all() -> None:
    from training.architectures import efficientnet_lite, modern, small  # noqa: F401
