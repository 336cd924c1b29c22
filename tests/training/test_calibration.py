"""Calibration inputs for INT8 (training/calibration.py): views of real photos, float nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from app.bundle import load_bundle
from training.calibration import float_nodes, load_views, photo_views


def test_views_are_distinct_crops_of_the_photo(photos_dir: Path) -> None:
    with Image.open(photos_dir / "imgaug" / "quokka.jpg") as im:
        photo = im.convert("RGB")
    views = photo_views(photo)
    w, h = photo.size
    assert [v.size for v in views] == [(w, h), (w, h)] + [
        (round(w * 0.75), round(h * 0.75))
    ] * 4 + [(round(w * 0.6), round(h * 0.6))]
    pixels = [np.asarray(v.resize((32, 32))) for v in views]
    assert np.array_equal(pixels[1], pixels[0][:, ::-1])  # the mirror
    distinct = {p.tobytes() for p in pixels}
    assert len(distinct) == len(views)
    assert len(photo_views(photo, 3)) == 3


def test_load_views_groups_by_source_photo(photos_dir: Path, tiny_models_dir: Path) -> None:
    spec = load_bundle(tiny_models_dir / "tiny").metadata.input
    photos = [photos_dir / "imgaug" / "quokka.jpg", photos_dir / "sklearn" / "china.jpg"]
    x, groups = load_views(photos, spec, 7)
    assert x.shape == (14, 28, 28, 1)
    assert groups.tolist() == [0] * 7 + [1] * 7


def test_float_nodes_are_the_first_conv_and_the_classifier(tiny_models_dir: Path) -> None:
    path = tiny_models_dir / "tiny" / "model.onnx"
    nodes = list(onnx.load(str(path)).graph.node)
    kept = float_nodes(path)
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    assert kept[0] == convs[0] and not set(convs[1:]) & set(kept)
    assert "Softmax" in {n.op_type for n in nodes if n.name in kept}
    last_matmul = [n.name for n in nodes if n.op_type in ("MatMul", "Gemm")][-1]
    assert last_matmul in kept
