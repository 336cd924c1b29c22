"""The shipped `products` and `digits` bundles: claims, serving, and real test images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.bundle import load_bundle
from app.imaging import ImageLimits, prepare
from app.registry import ModelRegistry
from tests.conftest import ROOT

SHIPPED = {
    # bundle: (data set, claimed minimum test accuracy, foolbox file prefix)
    "products": ("Fashion-MNIST", 0.94, "fashionMNIST_"),
    "digits": ("MNIST", 0.994, "mnist_"),
}


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    reg = ModelRegistry(ROOT / "models", providers="cpu", warmup_runs=1, enabled=list(SHIPPED))
    reg.load_all()
    return reg


@pytest.mark.parametrize("name", list(SHIPPED))
def test_claims_are_on_the_full_official_test_split(name: str) -> None:
    meta = load_bundle(ROOT / "models" / name).metadata
    dataset, minimum, _ = SHIPPED[name]
    m = meta.primary_metrics
    assert m is not None and m.dataset == dataset and m.split == "test"
    assert m.n_samples == 10_000 and m.evaluated_with == "onnxruntime"
    assert m.accuracy is not None and m.accuracy >= minimum
    assert m.extra["keras_top1_agreement"] >= 0.999
    assert meta.provenance.seed is not None and meta.provenance.training_time_s


@pytest.mark.parametrize("name", list(SHIPPED))
def test_classifies_real_test_images_in_the_server(
    name: str, registry: ModelRegistry, photos_dir: Path
) -> None:
    model = registry.get(name).model
    _, _, prefix = SHIPPED[name]
    files = sorted((photos_dir / "foolbox").glob(f"{prefix}*.png"))
    assert len(files) == 20
    spec = model.bundle.metadata.input
    batch = np.stack([prepare(f.read_bytes(), spec, ImageLimits()).array for f in files])
    pred = model.run(batch).probs.argmax(axis=1)
    truth = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files])
    assert (pred == truth).sum() >= 18, f"{name}: {(pred == truth).sum()}/20 correct"


def test_eval_bundles_script_runs_on_a_slice() -> None:
    """scripts/eval-bundles on the first 500 test images of each set (CI runs the full 10k)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "eval-bundles"), "--limit", "500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "products" in proc.stdout and "digits" in proc.stdout and "partial" in proc.stdout
