"""The `pretrained` recipe's shipped bundles (models/imagenet, models/bird): real photos through
the server's runtime reproduce the recorded figures; cards carry the config's reference figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import ROOT


def _bundle(name: str):  # type: ignore[no-untyped-def]
    from app.bundle import load_bundle
    from app.runtime import OnnxModel

    return OnnxModel(load_bundle(ROOT / "models" / name), ["CPUExecutionProvider"])


def test_imagenet_bundle_on_real_photos(photos_dir: Path) -> None:
    from app.imaging import ImageLimits, prepare
    from app.metrics import top_k_hits
    from training import imagenet

    model = _bundle("imagenet")
    meta = model.bundle.metadata
    assert model.bundle.labels == imagenet.class_names()
    photos = imagenet.imagenet_photos(photos_dir)
    x = np.stack([prepare(p.path.read_bytes(), meta.input, ImageLimits()).array for p in photos])
    probs = model.run(x).probs
    y = [p.imagenet_label for p in photos]
    top1 = int(top_k_hits(probs, y, 1).sum())
    m = meta.metrics[0]
    assert m.n_samples == 20 and top1 == round(m.accuracy * 20)  # the card's figure is reproducible
    assert top1 >= 17  # the PyTorch reference port's score (training/configs/imagenet.yaml)
    assert int(top_k_hits(probs, y, 5).sum()) >= 19
    cat = prepare((photos_dir / "skimage" / "chelsea.png").read_bytes(), meta.input, ImageLimits())
    top5 = np.argsort(-model.run(cat.array[None]).probs[0])[:5]
    assert set(top5.tolist()) & set(imagenet.CAT_INDICES), [model.bundle.labels[i] for i in top5]


def test_bird_bundle_sums_the_imagenet_bird_classes(photos_dir: Path) -> None:
    from app.imaging import ImageLimits, prepare
    from training import imagenet

    bird, full = _bundle("bird"), _bundle("imagenet")
    assert bird.bundle.labels == ("not_bird", "bird")
    m = bird.bundle.metadata.primary_metrics
    assert m is not None and m.positive_label == "bird" and m.threshold is not None
    spec = bird.bundle.metadata.input
    # imagenet's input, plus the drawing policy (which leaves these photos as they are)
    assert (
        spec.model_copy(update={"frame": None, "background": "as_is"}) == full.bundle.metadata.input
    )
    names = ["foolbox/imagenet_17_22.jpg", "foolbox/imagenet_15_99.jpg", "skimage/chelsea.png"]
    x = np.stack([prepare((photos_dir / n).read_bytes(), spec, ImageLimits()).array for n in names])
    p_bird = bird.run(x).probs
    p_full = full.run(x).probs
    expected = p_full[:, list(imagenet.BIRD_INDICES)].sum(1)
    assert np.allclose(p_bird[:, 1], expected, atol=1e-5)
    assert np.allclose(p_bird.sum(1), 1.0, atol=1e-5)
    assert (p_bird[:2, 1] >= m.threshold).all() and p_bird[2, 1] < m.threshold


def test_bird_decision_through_the_api(photos_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(ROOT / "models", tmp_path, enabled_models=["bird"])
    with TestClient(create_app(settings)) as client:
        for name, is_bird in [("foolbox/imagenet_17_22.jpg", True), ("skimage/chelsea.png", False)]:
            data = (photos_dir / name).read_bytes()
            r = client.post("/v1/models/bird/predict", content=data)
            assert r.status_code == 200, r.text
            decision = r.json()["results"][0]["decision"]
            assert decision["positive_label"] == "bird" and decision["is_positive"] is is_bird


def test_shipped_cards_state_sample_sizes_and_the_configs_reference_figures() -> None:
    """The bird card quotes the lecture's figures: they live in the config, and the shipped
    card must show the same numbers the config holds (not a constant compared with itself)."""
    from app.card import pct
    from training.config import PretrainedConfig
    from training.recipes import load_config

    for name in ("imagenet", "bird"):
        meta = load_bundle_meta(name)
        card = (ROOT / "models" / name / "README.md").read_text()
        n = meta.metrics[0].n_samples  # the card writes large counts with separators
        assert (f"n={n}" in card or f"n={n:,}" in card) and "Limitations" in card
    bird = load_config(ROOT / "training" / "configs" / "bird.yaml", PretrainedConfig)
    lecture = [r for r in bird.references if "lecture" in r.what]
    assert lecture, "bird.yaml lost the lecture reference figures"
    card = (ROOT / "models" / "bird" / "README.md").read_text()
    for value in lecture[0].figures.values():
        assert pct(value, 1) in card


def load_bundle_meta(name: str):  # type: ignore[no-untyped-def]
    from app.bundle import load_bundle

    return load_bundle(ROOT / "models" / name, verify_hash=False).metadata
