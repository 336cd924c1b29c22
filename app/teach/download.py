"""The standalone ONNX file of a served model: a shipped bundle's own graph, or a taught model's
backbone and head joined into one graph (built once, cached next to the taught bundle; served
from an anonymous temporary file when the data folder cannot take the cache: read-only or
full)."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from app.bundle_write import atomic_write
from app.errors import ModelNotFound
from app.registry import LoadedModel
from app.teach.head import Head
from app.teach.served import TaughtModel

STANDALONE_FILE = "standalone.onnx"
_lock = threading.Lock()
log = logging.getLogger(__name__)


def head_from_onnx(path: Path) -> Head:
    """The weights of a taught head graph (initializers teach_head/W and teach_head/b)."""
    import onnx  # onnx is imported by the requests that need it, not by every worker
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w, b = init["teach_head/W"], init["teach_head/b"]
    return Head(weights=w.astype("float64"), bias=b.astype("float64"), l2=0.0, iterations=0)


def _gone(loaded: LoadedModel) -> ModelNotFound:
    return ModelNotFound(f"Model {loaded.name!r} was deleted; it has no file to download.")


def _joined(model: TaughtModel) -> bytes:
    import onnx

    from app.teach.graph import standalone_model

    backbone = onnx.load(str(model.backbone.bundle.model_path))
    joined = standalone_model(backbone, head_from_onnx(model.bundle.model_path))
    return bytes(joined.SerializeToString())


def _uncached(data: bytes) -> BinaryIO:
    """The joined graph in an anonymous temporary file (gone when closed)."""
    file = tempfile.TemporaryFile()  # noqa: SIM115 (handed to the caller, who closes it)
    try:
        file.write(data)
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return file


def open_download(loaded: LoadedModel) -> BinaryIO:
    """The standalone file, open (blocking): a delete landing after this cannot cut it short."""
    model = loaded.model
    path = model.bundle.model_path
    if isinstance(model, TaughtModel):
        path = model.bundle.path / STANDALONE_FILE
        with _lock:
            if not path.is_file():
                try:
                    data = _joined(model)
                except Exception as exc:
                    if not model.bundle.path.is_dir():  # deleted while it was being joined
                        raise _gone(loaded) from exc
                    raise
                try:
                    atomic_write(path, data)
                except OSError as exc:
                    if not model.bundle.path.is_dir():
                        raise _gone(loaded) from exc
                    # read-only or full data folder: the download still works, uncached
                    log.warning("standalone file of %s not cached: %s", loaded.name, exc)
                    return _uncached(data)
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise _gone(loaded) from exc
