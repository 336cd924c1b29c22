"""End to end: the transfer-learning recipe on a stand-in folder of real package-shipped images.

Three visually distinct classes, 20 real images each from foolbox's data folder: handwritten
digits (MNIST), clothing (Fashion-MNIST) and photographs (ImageNet validation-style). Chance is
1/3; frozen ImageNet features separate these easily, so the held-out accuracy must be high.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from app.bundle import load_bundle
from app.imaging import ImageLimits, prepare
from app.runtime import OnnxModel

GROUPS = {"digit": "mnist_", "clothing": "fashionMNIST_", "photo": "imagenet_"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("folder")
    for cls, prefix in GROUPS.items():
        (root / cls).mkdir()
        files = sorted((photos_dir / "foolbox").glob(f"{prefix}*"))
        assert len(files) == 20, f"expected 20 foolbox {prefix} files"
        for f in files:
            shutil.copy(f, root / cls / f.name)
    (root / "photo" / "notes.txt").write_text("not an image: must be ignored")
    return root


def _config(tmp: Path, **overrides: object) -> Path:
    cfg = yaml.safe_load(Path("training/configs/santa.yaml").read_text())
    cfg.update(
        name="standin",
        positive_label=None,
        cache_dir="cache",  # relative: under the runs dir (tmp / "runs"), not ./cache
        data={"val_fraction": 0.15, "test_fraction": 0.25},
        head={**cfg["head"], "epochs": 40, "flip_augment": False},
    )
    cfg.update(overrides)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def result(folder: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from training.config import TransferConfig
    from training.recipes import load_config
    from training.transfer import run_transfer

    tmp = tmp_path_factory.mktemp("transfer")
    cfg = load_config(_config(tmp), TransferConfig)
    return run_transfer(cfg, folder, tmp / "models", tmp / "runs"), tmp


@pytest.mark.slow
def test_held_out_accuracy_well_above_chance(result) -> None:  # type: ignore[no-untyped-def]
    r, _ = result
    assert (r.n_train, r.n_val, r.n_test) == (36, 9, 15)  # 20 per class: 12/3/5
    assert r.test_accuracy >= 0.8, (
        f"held-out accuracy {r.test_accuracy} (chance 0.33), {r.confusion}"
    )
    assert np.asarray(r.confusion).sum() == r.n_test


@pytest.mark.slow
def test_bundle_serves_and_agrees(result, folder: Path) -> None:  # type: ignore[no-untyped-def]
    r, _ = result
    bundle = load_bundle(r.bundle.path)
    meta = bundle.metadata
    assert bundle.labels == ("clothing", "digit", "photo")
    assert meta.outputs.embedding is not None and meta.outputs.embedding.dim == 1280
    m = meta.metrics[0]
    assert (
        m.split == "test"
        and m.n_samples == r.n_test
        and m.accuracy == pytest.approx(r.test_accuracy)
    )
    model = OnnxModel(bundle, ["CPUExecutionProvider"])
    img = prepare((folder / "digit" / "mnist_00_7.png").read_bytes(), meta.input, ImageLimits())
    out = model.run(img.array[None])
    assert out.probs.shape == (1, 3) and out.probs.sum() == pytest.approx(1, abs=1e-4)
    assert (r.run_dir / "metrics.json").is_file() and (r.run_dir / "config.yaml").is_file()


@pytest.mark.slow
def test_embeddings_are_cached_by_content(result, folder: Path) -> None:  # type: ignore[no-untyped-def]
    from training.config import TransferConfig
    from training.folder_embeddings import EmbeddingCache, embed_files
    from training.recipes import load_config
    from training.transfer_head import backbone_key

    r, tmp = result
    assert r.embed_stats.computed == 60 and r.embed_stats.cached == 0
    cfg = load_config(tmp / "config.yaml", TransferConfig)
    # A relative cache_dir follows the runs dir (it was taken from the working folder, so
    # `--runs-dir /tmp/runs` still wrote into ./runs/cache).
    assert cfg.cache_path(tmp / "runs") == tmp / "runs" / "cache"
    assert not Path("cache").exists()
    cache = EmbeddingCache.open(tmp / "runs" / "cache", backbone_key(cfg))
    assert len(cache.entries) == 60
    # A renamed copy hits the cache (keyed by content); the backbone is never called.
    copy = tmp / "renamed.png"
    shutil.copy(folder / "digit" / "mnist_03_0.png", copy)

    class Boom:
        output = type("T", (), {"shape": (None, 1280)})()

        def predict(self, *a: object, **k: object) -> None:
            raise AssertionError("cache miss")

    emb, kept, stats = embed_files(Boom(), [copy], cfg.input, cache)  # type: ignore[arg-type]
    assert stats.cached == 1 and emb.shape == (1, 1280) and kept.tolist() == [0]


@pytest.mark.slow
def test_card_is_rendered_from_the_run(result) -> None:  # type: ignore[no-untyped-def]
    r, _ = result
    card = (r.bundle.path / "README.md").read_text()
    meta = r.bundle.metadata
    assert f"({meta.outputs.embedding.dim}-d" in card
    assert f"train {r.n_train}, validation {r.n_val}, test {r.n_test}" in card
    assert f"n={r.n_test}" in card and "Confusion matrix" in card


def test_binary_folder_records_a_threshold_calibrated_on_validation() -> None:
    from training.config import TransferConfig
    from training.transfer import _metrics

    cfg = TransferConfig(
        name="santa",
        seed=0,
        input={"height": 224, "width": 224, "channels": 3, "color": "rgb"},
        positive_label="santa",
    )
    labels = {
        "train": np.array([0, 1] * 5),
        "val": np.array([0, 0, 1, 1]),
        "test": np.array([0, 1, 1]),
    }
    # validation: P(santa) of non-santas 0.1, 0.3; of santas 0.8, 0.9 -> any cut in (0.3, 0.8)
    val = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9]], np.float32)
    test = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]], np.float32)
    m = _metrics(cfg, ("not_santa", "santa"), test, labels, val, 10)
    assert m.positive_label == "santa" and m.threshold == 0.5
    assert (m.extra["tp"], m.extra["fn"], m.extra["fp"], m.extra["tn"]) == (1, 1, 0, 1)
    assert m.precision == 1.0 and m.recall == 0.5 and m.n_samples == 3


def test_a_positive_label_not_in_the_folder_is_refused_before_training(tmp_path: Path) -> None:
    """It was only checked at the metrics, after embedding, training and export to the run."""
    from PIL import Image

    from training.config import TransferConfig
    from training.data import BadData
    from training.transfer import split_folder

    for cls in ("red", "green"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    cfg = TransferConfig(
        name="santa",
        seed=0,
        input={"height": 224, "width": 224, "channels": 3, "color": "rgb"},
        positive_label="santa",
    )
    with pytest.raises(BadData, match=r"positive_label 'santa' is not one of the folder's"):
        split_folder(cfg, tmp_path)
    names, _, _ = split_folder(cfg.model_copy(update={"positive_label": "red"}), tmp_path)
    assert names == ("green", "red")


@pytest.mark.slow
def test_evaluate_with_the_transfer_config_remeasures_its_held_out_split(  # type: ignore[no-untyped-def]
    result, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`evaluate --config` took only scratch configs ("needs ScratchConfig"), though its advice
    named any config: a transfer bundle is now re-measured on the split its run held out."""
    from training.__main__ import main

    r, tmp = result
    args = ["--config", tmp / "config.yaml", "--data-dir", folder, "--runs-dir", tmp / "runs"]
    assert main(["evaluate", "--bundle", str(r.bundle.path), *map(str, args)]) == 0
    out = capsys.readouterr().out
    assert f"did not train or validate on) test, n={r.n_test}," in out
    assert f"accuracy {r.test_accuracy:.4%}" in out
    # the run kept the Keras model behind the bundle, so the serving path is checked against it
    assert f"Keras model: {r.run_dir / 'model.keras'}" in out
    assert "same top-1 as the serving path on 100.0000%" in out


def _digests(paths: list[Path]) -> set[str]:
    import hashlib

    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_renaming_pictures_keeps_every_picture_in_its_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Round 30: the split followed the sorted file names, so renaming photos moved them
    between train, validation and test (and recomputed embeddings the docs said were cached).
    Files are now ordered by content; a second copy of the same bytes in a class is skipped
    (it could be trained on and tested on at once)."""
    import logging

    from PIL import Image

    from training.config import TransferConfig
    from training.transfer import split_folder

    for cls in ("red", "green"):
        (tmp_path / cls).mkdir()
        for i in range(12):
            Image.new("RGB", (8, 8), (20 * i, 0 if cls == "red" else 99, 7)).save(
                tmp_path / cls / f"{i:02d}.png"
            )
    cfg = TransferConfig(
        name="colours", seed=0, input={"height": 224, "width": 224, "channels": 3, "color": "rgb"}
    )
    before = {s: _digests(paths) for s, paths in split_folder(cfg, tmp_path)[1].items()}
    for cls in ("red", "green"):  # every name reversed: 00 <-> 11, ...
        for p in sorted((tmp_path / cls).iterdir()):
            p.rename(p.with_name(f"tmp-{11 - int(p.stem):02d}.png"))
        for p in sorted((tmp_path / cls).iterdir()):
            p.rename(p.with_name(p.name.removeprefix("tmp-")))
    (tmp_path / "red" / "copy.png").write_bytes((tmp_path / "red" / "03.png").read_bytes())
    with caplog.at_level(logging.WARNING, logger="training.data"):
        _, after, _ = split_folder(cfg, tmp_path)
    assert "copy.png: the same bytes as" in caplog.text
    for split in ("train", "val", "test"):
        assert _digests(after[split]) == before[split], split
    assert sum(len(v) for v in after.values()) == 24  # the copy is not a 25th picture


def test_a_class_left_without_pictures_that_decode_is_refused() -> None:
    """Round 30: three truncated JPEGs (valid headers) as one class trained and exported a
    two-class bundle whose class had no picture at all, with a warning per file."""
    from training.data import BadData
    from training.transfer import check_decodable

    names = ("digit", "photo")
    ok = {s: np.array([0, 1], np.int64) for s in ("train", "val", "test")}
    given = dict.fromkeys(ok, 2)
    check_decodable(names, given, ok, Path("folder"))
    gone = ok | {"test": np.array([0], np.int64)}
    with pytest.raises(BadData, match=r"too few pictures that decode in \['photo'\]"):
        check_decodable(names, given, gone, Path("folder"))
    no_val = ok | {"val": np.array([], np.int64)}  # val_fraction 0: no validation split at all
    check_decodable(names, given | {"val": 0}, no_val, Path("folder"))
    # round 31: a split given pictures, none of which decoded, names both classes (it was
    # skipped as if never given, and the run ended in a traceback after training)
    with pytest.raises(BadData, match=r"too few pictures that decode in \['digit', 'photo'\]"):
        check_decodable(names, given, no_val, Path("folder"))


@pytest.mark.slow
def test_evaluate_on_a_grown_folder_tests_only_pictures_the_run_did_not_train_on(  # type: ignore[no-untyped-def]
    result, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Round 44: after pictures were added to the folder, `evaluate --config` drew the split
    again and scored 20 of 48 "test" pictures the bundle had trained on. It now tests every
    picture the run neither trained nor validated on: its own test pictures and the new ones
    (found by place below the class folder, or by content when renamed)."""
    from PIL import Image, ImageOps

    from training import bundle_eval
    from training.__main__ import main
    from training.config import TransferConfig
    from training.recipes import load_config

    r, tmp = result
    grown = tmp_path / "grown"
    shutil.copytree(folder, grown)
    for cls in GROUPS:  # two new pictures a class (mirrored copies: new bytes, unseen)
        pictures = sorted(p for p in (grown / cls).iterdir() if p.suffix in (".png", ".jpg"))
        for src in pictures[:2]:
            mirrored = ImageOps.mirror(Image.open(src).convert("RGB"))
            mirrored.save(grown / cls / f"new-{src.stem}.png")
    renamed = sorted((grown / "digit").glob("mnist_*"))[0]  # a renamed picture is still known
    renamed.rename(renamed.with_name("renamed.png"))
    seen = bundle_eval.trained_pictures(r.run_dir)
    assert seen is not None
    cfg = load_config(tmp / "config.yaml", TransferConfig)
    held = bundle_eval.held_out_set(cfg, r.bundle, grown, seen)
    assert len(held.y) == r.n_test + 6
    args = ["--config", tmp / "config.yaml", "--data-dir", grown, "--runs-dir", tmp / "runs"]
    assert main(["evaluate", "--bundle", str(r.bundle.path), *map(str, args)]) == 0
    out = capsys.readouterr().out
    assert f"did not train or validate on) test, n={r.n_test + 6}," in out, out
