"""training/serving_eval.py: the one way training runs ONNX graphs (app.runtime.OnnxModel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.bundle import BundleError, load_bundle
from training.serving_eval import open_model, run_prepared

ROOT = Path(__file__).resolve().parents[2]


def test_bare_bytes_and_the_bundle_give_the_same_outputs() -> None:
    bundle = load_bundle(ROOT / "models" / "digits")
    x = np.random.default_rng(0).uniform(0, 255, (5, 28, 28, 1)).astype(np.float32)
    p1, e1 = run_prepared(open_model(bundle), x, batch_size=2)
    p2, e2 = run_prepared(open_model(bundle.model_path.read_bytes(), bundle), x)
    assert p1.shape == (5, 10) and e1 is not None and e2 is not None
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(e1, e2, atol=1e-5)
    empty, _ = run_prepared(open_model(bundle), x[:0])
    assert empty.shape == (0, 10)


def test_bare_bytes_must_match_the_contract_they_borrow() -> None:
    digits = load_bundle(ROOT / "models" / "digits")
    products = load_bundle(ROOT / "models" / "products")
    with pytest.raises(ValueError, match="like"):
        open_model(digits.model_path.read_bytes())
    # products' graph has a 256-d embedding, digits' contract says 128: refused like the server
    assert products.metadata.outputs.embedding is not None
    assert products.metadata.outputs.embedding.dim != 128
    with pytest.raises(BundleError, match="embedding"):
        open_model(products.model_path.read_bytes(), digits)
    meta = digits.metadata.model_copy(update={"num_classes": 3})
    with pytest.raises(BundleError):
        open_model(digits.model_path.read_bytes(), metadata=meta, labels=("a", "b", "c"))
