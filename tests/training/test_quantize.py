"""Static INT8 quantization (training/quantize.py) on the real tiny Fashion-MNIST bundle."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.bundle import load_bundle
from app.runtime import OnnxModel


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, fashion_mnist) -> list[Path]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("fm")
    paths = []
    for i in range(48):
        path = folder / f"{i:02d}.png"
        Image.fromarray(fashion_mnist.x_test[i].squeeze()).save(path)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_quantized_bundle_agrees_and_validates(
    tiny_models_dir: Path, images, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from training.quantize import quantize_bundle

    saved = tmp_path / "q.onnx"
    # The tiny CNN's softmax has near-ties on some images; 0.9 keeps the test about the pipeline.
    r = quantize_bundle(
        tiny_models_dir / "tiny", tmp_path, "tiny-int8", images, min_agreement=0.9, save_onnx=saved
    )
    assert r.n_photos == 48 and saved.is_file()
    assert r.agreement_cross >= 0.9, r
    assert r.int8_bytes < r.fp32_bytes
    assert r.written is not None
    bundle = load_bundle(tmp_path / "tiny-int8")
    assert bundle.metadata.name == "tiny-int8"
    assert bundle.labels == load_bundle(tiny_models_dir / "tiny").labels
    agreement = [m for m in bundle.metadata.metrics if m.split == "fp32-agreement"]
    assert agreement and agreement[0].n_samples == 48
    out = OnnxModel(bundle, ["CPUExecutionProvider"]).run(np.zeros((2, 28, 28, 1), np.float32))
    assert out.probs.shape == (2, 10)
    assert "INT8" in (tmp_path / "tiny-int8" / "README.md").read_text()


@pytest.mark.slow
def test_quantized_bundle_is_not_written_below_the_bar(
    tiny_models_dir: Path, images, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from training.quantize import quantize_bundle

    r = quantize_bundle(tiny_models_dir / "tiny", tmp_path, "no", images[:20], min_agreement=0.0)
    assert r.written is None  # fewer than 40 photos: agreement not measurable enough
    assert not (tmp_path / "no").exists()


def test_no_confident_photo_leaves_no_nan_in_metadata_or_card(tmp_path: Path) -> None:
    """A model confident on no calibration photo (a tiny fresh one) has no 'confident'
    agreement: it was NaN in the metadata, which write_bundle refused, so quantize crashed."""
    from app.bundle import BundleMetadata
    from tests.onnx_graphs import write_tiny_bundle
    from training.quantize import QuantReport
    from training.quantize_card import int8_card, int8_metadata

    fp32 = write_tiny_bundle(tmp_path, "tiny")
    r = QuantReport(
        n_photos=42, n_sources=6, agreement_cross=1.0, agreement_shipped=1.0,
        agreement_confident=float("nan"), n_confident=0, fp32_ms={1: 0.2, 8: 1.0},
        int8_ms={1: 0.1, 8: 0.5}, fp32_bytes=1000, int8_bytes=500, written=None, views=7,
    )  # fmt: skip
    meta = BundleMetadata.model_validate(int8_metadata(fp32, "tiny-int8", r, []).model_dump())
    extra = meta.metrics[-1].extra
    assert "agreement_fp32_confident" not in extra and extra["n_fp32_confident"] == 0
    card = int8_card(fp32, meta, r)
    assert not re.search(r"\bnan\b", card, re.IGNORECASE) and "n/a on the n=0 photos" in card
