"""Architecture registry: create_model(name, input_shape, num_classes, **kwargs).

Every architecture is a Functional Keras model taking float pixels in 0..255 (scaling is in
the graph), with a layer named ``embedding`` right before the softmax classifier.
"""

from __future__ import annotations

import inspect
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


def check_arguments(name: str, kwargs: dict[str, Any]) -> Builder:
    """The builder for `name`, once it is known to take `kwargs`: a config's typo fails here,
    in words, before any data is read (not as a TypeError deep in a run)."""
    _import_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(_REGISTRY)}")
    builder = _REGISTRY[name]
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return builder  # takes any option: the builder itself decides
    known = [p for p in params if p not in ("input_shape", "num_classes")]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(
            f"architecture {name!r} takes no {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(known) or 'none'}"
        )
    return builder


def create_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs: Any
) -> keras.Model:
    builder = check_arguments(name, kwargs)
    model = builder(input_shape=input_shape, num_classes=num_classes, **kwargs)
    model.get_layer("embedding")  # every architecture must expose one
    return model


def _import_all() -> None:
    from training.architectures import efficientnet_lite, modern, small  # noqa: F401
