"""Calibration inputs for static quantization: several deterministic views of each real photo
(through the server's ingestion) and the graph nodes that stay in float."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from PIL import Image, ImageOps

from app.bundle import InputSpec
from app.imaging import ImageLimits, prepare
from training.data import load_images

logger = logging.getLogger(__name__)

VIEWS = 7  # per photo: itself, its mirror, four 75% corner crops, a 60% centre crop


def photo_views(image: Image.Image, n: int = VIEWS) -> list[Image.Image]:
    """Deterministic views of one photo (the first `n` of: itself, mirror, 4 corner crops at
    75% of each side, centre crop at 60%)."""
    w, h = image.size
    out = [image, ImageOps.mirror(image)]
    cw, ch = round(w * 0.75), round(h * 0.75)
    out += [image.crop((x, y, x + cw, y + ch)) for y in (0, h - ch) for x in (0, w - cw)]
    cw, ch = round(w * 0.6), round(h * 0.6)
    out.append(image.crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2)))
    return out[:n]


def load_views(
    photos: Sequence[Path], spec: InputSpec, n: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Model inputs of `n` views per photo through the server's ingestion (each view encoded
    as PNG, so it is decoded like an upload); returns them and each one's source photo index."""
    if n <= 1:
        x, kept = load_images(photos, spec)
        return x, kept
    arrays, groups = [], []
    for i, path in enumerate(photos):
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except OSError as exc:
            logger.warning("skipping %s: %s", path, exc)
            continue
        for view in photo_views(image, n):
            buf = io.BytesIO()
            view.save(buf, "PNG")
            arrays.append(prepare(buf.getvalue(), spec, ImageLimits()).array)
            groups.append(i)
    return np.stack(arrays).astype(np.float32), np.asarray(groups, dtype=np.int64)


def float_nodes(model: Path) -> list[str]:
    """Nodes kept in float: the first Conv, and the last MatMul/Gemm with everything after it
    (the classifier and its softmax: the most sensitive to rounding)."""
    nodes = list(onnx.load(str(model)).graph.node)
    keep = [n.name for n in nodes if n.op_type == "Conv"][:1]
    last = [i for i, n in enumerate(nodes) if n.op_type in ("MatMul", "Gemm")]
    if last:
        keep += [n.name for n in nodes[last[-1] :]]
    return keep
