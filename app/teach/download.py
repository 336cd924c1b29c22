"""The standalone ONNX file of a served model: a shipped bundle's own graph, or a taught model's
backbone and head joined into one graph (built once, cached next to the taught bundle)."""

from __future__ import annotations

import threading
from pathlib import Path

import onnx
from onnx import numpy_helper

from app.bundle_write import atomic_write
from app.registry import LoadedModel
from app.teach.graph import standalone_model
from app.teach.head import Head
from app.teach.served import TaughtModel

STANDALONE_FILE = "standalone.onnx"
_lock = threading.Lock()


def head_from_onnx(path: Path) -> Head:
    """The weights of a taught head graph (initializers teach_head/W and teach_head/b)."""
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w, b = init["teach_head/W"], init["teach_head/b"]
    return Head(weights=w.astype("float64"), bias=b.astype("float64"), l2=0.0, iterations=0)


def standalone_file(loaded: LoadedModel) -> Path:
    model = loaded.model
    if not isinstance(model, TaughtModel):
        return model.bundle.model_path
    target = model.bundle.path / STANDALONE_FILE
    with _lock:
        if not target.is_file():
            backbone = onnx.load(str(model.backbone.bundle.model_path))
            joined = standalone_model(backbone, head_from_onnx(model.bundle.model_path))
            atomic_write(target, joined.SerializeToString())
    return target
