"""EfficientNet-Lite0: checkpoint reader, Keras port and shipped ONNX against PyTorch reference
outputs (tests/fixtures/efficientnet_reference_logits.npz, made by
scripts/make-efficientnet-reference with PyTorch 2.13.0 and efficientnet-lite-pytorch 0.1.0)."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA, ROOT, require

FIXTURES = ROOT / "tests" / "fixtures"
REFERENCE = FIXTURES / "efficientnet_reference_logits.npz"
WEIGHTS = DATA / "weights" / "efficientnet-lite0-57934424.pth"
TOL = 1e-4


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


def reference_inputs(photos: list[str]) -> np.ndarray:
    """224x224 RGB, Pillow bilinear stretch, float 0..255: exactly what the reference saw."""
    arrays = []
    for p in photos:
        img = Image.open(require(DATA / "photos" / p)).convert("RGB")
        arrays.append(np.asarray(img.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.uint8))
    return np.stack(arrays)


def checked_inputs(ref: dict[str, np.ndarray]) -> np.ndarray:
    pixels = reference_inputs([str(p) for p in ref["photos"]])
    digests = [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
    assert digests == ref["input_sha256"].tolist(), (
        "preprocessed inputs differ from those the reference saw (Pillow's resize changed?); "
        "rerun scripts/make-efficientnet-reference"
    )
    return pixels.astype(np.float32)


# --- checkpoint reader ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reader_reads_both_torch_save_layouts(layout: str) -> None:
    from training.weights.torch_checkpoint import load_torch_checkpoint

    sd = load_torch_checkpoint(FIXTURES / f"torch_checkpoint_{layout}.pt")
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert sd["a"].dtype == np.float32 and np.array_equal(sd["a"], a)
    assert np.array_equal(sd["a_t"], a.T)  # non-contiguous strides
    assert np.array_equal(sd["a_row1"], a[1])  # shared storage at an offset
    assert sd["half"].dtype == np.float16 and np.array_equal(sd["half"], np.arange(6) / 4)
    assert sd["long"].dtype == np.int64 and sd["long"].tolist() == [-2, -1, 0, 1, 2]
    assert sd["bf16"].tolist() == [1.5, -2.0, 0.25]
    assert sd["flag"].tolist() == [True, False]
    assert sd["scalar"].shape == () and int(sd["scalar"]) == 7
    assert np.array_equal(sd["param"], np.ones((2, 2), np.float32))


def test_reader_refuses_code_in_the_pickle(tmp_path: Path) -> None:
    from training.weights.torch_checkpoint import CheckpointError, load_torch_checkpoint

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": Path.cwd}))  # a global call
    with pytest.raises(CheckpointError, match="does not allow"):
        load_torch_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_torch_checkpoint(tmp_path / "junk.pt")


def test_reader_reads_the_pretrained_checkpoint() -> None:
    from training.weights import load_torch_state_dict

    sd = load_torch_state_dict(require(WEIGHTS))
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    n = sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert n == 4_694_024


# --- Keras port -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_model():  # type: ignore[no-untyped-def]
    from training.architectures import create_model

    require(WEIGHTS)
    return create_model("efficientnet_lite0", (224, 224, 3), 1000, weights="imagenet")


def test_keras_port_matches_pytorch_reference(keras_model) -> None:  # type: ignore[no-untyped-def]
    import keras

    ref = reference()
    x = checked_inputs(ref)
    probe = keras.Model(
        keras_model.input,
        [keras_model.get_layer("logits").output, keras_model.get_layer("embedding").output],
    )
    logits, features = (np.asarray(t) for t in probe(x, training=False))
    assert np.max(np.abs(logits - ref["logits"])) <= TOL
    assert np.max(np.abs(features - ref["features"])) <= TOL
    assert (logits.argmax(1) == ref["logits"].argmax(1)).all()


def test_architecture_contract(keras_model) -> None:  # type: ignore[no-untyped-def]
    from training.architectures import available, create_model

    assert "efficientnet_lite0" in available()
    assert keras_model.count_params() == 4_694_024
    assert keras_model.get_layer("embedding").output.shape[-1] == 1280
    assert keras_model.input.shape[1:] == (224, 224, 3)
    # a fresh head for another task keeps the backbone weights
    five = create_model("efficientnet_lite0", (224, 224, 3), 5, weights="imagenet")
    assert five.output.shape[-1] == 5
    w_ref = keras_model.get_layer("block15_project_conv").get_weights()[0]
    assert np.array_equal(five.get_layer("block15_project_conv").get_weights()[0], w_ref)
    with pytest.raises(ValueError, match="RGB"):
        create_model("efficientnet_lite0", (224, 224, 1), 5)


def test_fine_tune_keeps_batchnorm_and_lower_blocks_frozen(keras_model) -> None:  # type: ignore[no-untyped-def]
    from training.architectures import create_model
    from training.transfer import FineTuneConfig, TransferConfig, fine_tune

    model = create_model("efficientnet_lite0", (96, 96, 3), 2, weights="imagenet")
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    cfg = TransferConfig(
        name="ft",
        seed=0,
        input={"height": 96, "width": 96, "channels": 3, "color": "rgb"},
        fine_tune=FineTuneConfig(
            enabled=True, blocks=1, epochs=1, learning_rate=1e-3, batch_size=4
        ),
    )
    x = reference_inputs(["skimage/chelsea.png", "foolbox/imagenet_17_22.jpg"] * 2).astype(
        np.float32
    )
    x = x[:, ::2, ::2][:, :96, :96]
    fine_tune(cfg, model, x, np.array([0, 1, 0, 1]), 2)

    def changed(name: str) -> bool:
        after = model.get_layer(name).get_weights()
        return any(not np.array_equal(a, b) for a, b in zip(after, before[name], strict=True))

    assert changed("block15_project_conv") and changed("head_conv") and changed("logits")
    assert not changed("block14_project_conv") and not changed("stem_conv")
    assert not changed("head_bn") and not changed("block15_project_bn")  # moving stats too


# --- shipped bundles ------------------------------------------------------------------------


def _bundle(name: str):  # type: ignore[no-untyped-def]
    from app.bundle import load_bundle
    from app.runtime import OnnxModel

    return OnnxModel(load_bundle(ROOT / "models" / name), ["CPUExecutionProvider"])


def test_shipped_imagenet_onnx_matches_pytorch_reference() -> None:
    from training.weights import load_torch_state_dict

    ref = reference()
    out = _bundle("imagenet").run(checked_inputs(ref))
    assert out.embedding is not None
    assert np.max(np.abs(out.embedding - ref["features"])) <= TOL
    # The bundle outputs probabilities; the logits follow from the embedding and the classifier.
    sd = load_torch_state_dict(require(WEIGHTS))
    logits = out.embedding @ sd["_fc.weight"].T + sd["_fc.bias"]
    assert np.max(np.abs(logits - ref["logits"])) <= TOL
    e = np.exp(ref["logits"] - ref["logits"].max(1, keepdims=True))
    assert np.max(np.abs(out.probs - e / e.sum(1, keepdims=True))) <= 1e-5


def test_imagenet_bundle_on_real_photos(photos_dir: Path) -> None:
    from app.imaging import ImageLimits, prepare
    from training import imagenet

    model = _bundle("imagenet")
    meta = model.bundle.metadata
    assert model.bundle.labels == imagenet.class_names()
    photos = imagenet.imagenet_photos(photos_dir)
    x = np.stack([prepare(p.path.read_bytes(), meta.input, ImageLimits()).array for p in photos])
    probs = model.run(x).probs
    y = [p.imagenet_label for p in photos]
    top1 = int(imagenet.topk_hits(probs, y, 1).sum())
    m = meta.metrics[0]
    assert m.n_samples == 20 and top1 == round(m.accuracy * 20)  # the card's figure is reproducible
    assert top1 >= 17  # the PyTorch reference port's score
    assert int(imagenet.topk_hits(probs, y, 5).sum()) >= 19
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
    assert spec == full.bundle.metadata.input
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


# --- ImageNet classes -----------------------------------------------------------------------


def test_class_names_are_unique_and_readable() -> None:
    from training import imagenet

    names = imagenet.class_names()
    assert len(names) == len(set(names)) == 1000
    assert names[22] == "bald eagle" and names[285] == "Egyptian cat"
    assert {names[134], names[517]} == {"crane (bird)", "crane (machine)"}


def test_bird_classes_are_the_wordnet_hyponyms_of_bird() -> None:
    from training import imagenet

    assert len(imagenet.BIRD_INDICES) == 59
    data_noun = imagenet.WORDNET_DATA_NOUN
    if not data_noun.is_file():
        pytest.skip(f"{data_noun} absent (Debian package wordnet-base); the list is checked there")
    found = imagenet.wordnet_hyponym_indices(
        data_noun, imagenet.read_synsets(), imagenet.BIRD_SYNSET
    )
    assert found == imagenet.BIRD_INDICES


def test_wordnet_walk_on_a_tiny_hierarchy(tmp_path: Path) -> None:
    from training import imagenet

    # data.noun lines: offset lex_filenum ss_type w_cnt word lex_id p_cnt [ptr offset pos src]...
    lines = [
        "  1 licence header line",
        "00000001 05 n 01 bird 0 000 | x",
        "00000002 05 n 01 eagle 0 001 @ 00000001 n 0000 | x",
        "00000003 05 n 01 bald_eagle 0 001 @ 00000002 n 0000 | x",
        "00000004 05 n 01 cat 0 000 | x",
    ]
    path = tmp_path / "data.noun"
    path.write_text("\n".join(lines) + "\n")
    synsets = ["n00000004", "n00000003", "n00000001", "n00000002"]
    assert imagenet.wordnet_hyponym_indices(path, synsets, "n00000001") == (1, 2, 3)


def test_bundle_card_mentions_sample_sizes() -> None:
    for name in ("imagenet", "bird"):
        card = (ROOT / "models" / name / "README.md").read_text()
        assert "n=" in card and "Limitations" in card
    assert "97.1%" in (ROOT / "models" / "bird" / "README.md").read_text()
