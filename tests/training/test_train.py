"""End to end on small real-format data: train -> run directory -> bundle -> serving path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.bundle import load_bundle
from app.registry import ModelRegistry
from tests.conftest import ROOT
from tests.training.test_datasets import small_config
from training.__main__ import main as cli
from training.data import load_cifar10
from training.serving_eval import check_bundles
from training.train import RunResult, fit

TRAIN_SEED = 11


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, mnist_small_dir: Path) -> RunResult:
    """~810 real MNIST digits, 6 short epochs of the lecture CNN, exported to a bundle."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = small_config(
        name="mini-digits",
        seed=TRAIN_SEED,
        input={"invert": "auto"},
        model={"architecture": "lecture_cnn", "kwargs": {"embedding_dim": 64}},
        augment={"translate": 0.05, "fill_mode": "constant"},
        train={
            "epochs": 6,
            "batch_size": 64,
            "learning_rate": 0.002,
            "schedule": "cosine",
            "warmup_epochs": 1,
            "verbose": 0,
        },
        export={"parity_samples": 32},
    )
    return fit(cfg, data_dir=mnist_small_dir, out_dir=tmp / "models", runs_dir=tmp / "runs")


@pytest.mark.slow
def test_short_run_beats_chance_clearly(digits_run: RunResult) -> None:
    ex = digits_run.export
    assert ex is not None and ex.serving is not None
    # 10 classes: chance is 10%; a few hundred real digits already give far more.
    assert ex.serving.report.n_samples == 300
    assert ex.serving.report.accuracy > 0.7
    assert ex.agreement is not None and ex.agreement >= 0.999


@pytest.mark.slow
def test_run_directory_holds_everything(digits_run: RunResult) -> None:
    run = digits_run.run_dir
    for name in (
        "config.yaml",
        "history.csv",
        "training_curves.png",
        "confusion_matrix.png",
        "metrics.json",
        "model.keras",
        "best.weights.h5",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    report = metrics["serving"]["report"]
    assert len(report["per_class"]) == 10 and len(report["confusion"]) == 10
    assert sum(map(sum, report["confusion"])) == 300
    assert {"precision", "recall", "f1", "support"} <= set(report["per_class"][0])
    assert report["top_k"] == 5 and report["top_k_accuracy"] >= report["accuracy"]
    assert metrics["training"]["train_seconds"] > 0 and metrics["training"]["hardware"]
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 6 and "learning_rate" in history[0] and "val_accuracy" in history[0]
    # The best validation epoch's weights are the ones kept.
    assert digits_run.best_epoch == 1 + int(np.argmax(digits_run.history["val_accuracy"]))
    # The shipped model.onnx is byte for byte the one evaluated in the run's staging copy.
    assert digits_run.export is not None and digits_run.export.bundle is not None
    staged = load_bundle(run / "bundle" / "mini-digits")
    assert staged.metadata.artifact.sha256 == digits_run.export.bundle.metadata.artifact.sha256


@pytest.mark.slow
def test_bundle_records_metrics_provenance_and_card(digits_run: RunResult) -> None:
    assert digits_run.export is not None and digits_run.export.bundle is not None
    bundle = load_bundle(digits_run.export.bundle.path)
    meta = bundle.metadata
    primary = meta.primary_metrics
    assert primary is not None and primary.split == "test" and primary.n_samples == 300
    assert primary.dataset == "MNIST" and primary.evaluated_with == "onnxruntime"
    assert meta.provenance.seed == TRAIN_SEED and meta.provenance.architecture == "lecture_cnn"
    assert meta.provenance.training_time_s and meta.provenance.epochs == 6
    card = (bundle.path / "README.md").read_text()
    assert "n = 300" in card and "Confusion matrix" in card and "Training time" in card
    # invert: auto -> the same test images inverted are measured and recorded too.
    assert meta.input.invert == "auto" and "`invert: auto`" in card
    inverted = [m for m in meta.metrics if m.split == "test inverted"]
    assert len(inverted) == 1 and inverted[0].n_samples == 300
    assert inverted[0].accuracy is not None and primary.accuracy is not None
    assert abs(inverted[0].accuracy - primary.accuracy) <= 0.02


@pytest.mark.slow
def test_bundle_serves_in_the_registry(digits_run: RunResult, photos_dir: Path) -> None:
    from app.imaging import ImageLimits, prepare

    assert digits_run.export is not None and digits_run.export.bundle is not None
    registry = ModelRegistry(digits_run.export.bundle.path.parent, providers="cpu", warmup_runs=1)
    registry.load_all()
    model = registry.get("mini-digits").model
    files = sorted((photos_dir / "foolbox").glob("mnist_*.png"))
    batch = np.stack(
        [prepare(f.read_bytes(), model.bundle.metadata.input, ImageLimits()).array for f in files]
    )
    pred = model.run(batch).probs.argmax(1)
    truth = np.array([int(f.stem.split("_")[-1]) for f in files])
    assert (pred == truth).mean() > 0.5  # 20 real MNIST test digits, model trained on 810


@pytest.mark.slow
def test_eval_check_passes_and_catches_a_false_claim(
    digits_run: RunResult, mnist_small_dir: Path, tmp_path: Path
) -> None:
    assert digits_run.export is not None and digits_run.export.bundle is not None
    rows, ok = check_bundles([digits_run.export.bundle.path], 0.001, mnist_small_dir)
    assert ok and rows[0]["n"] == 300 and abs(rows[0]["delta_points"]) < 1e-6
    fake = tmp_path / "mini-digits"
    shutil.copytree(digits_run.export.bundle.path, fake)
    meta = json.loads((fake / "metadata.json").read_text())
    meta["metrics"][0]["accuracy"] = min(1.0, meta["metrics"][0]["accuracy"] + 0.02)
    (fake / "metadata.json").write_text(json.dumps(meta))
    rows, ok = check_bundles([fake], 0.001, mnist_small_dir)
    assert not ok and rows[0]["status"] == "FAIL"


@pytest.mark.slow
def test_cli_export_and_evaluate(
    digits_run: RunResult, mnist_small_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keras_model = digits_run.run_dir / "model.keras"
    config = digits_run.run_dir / "config.yaml"
    rc = cli(
        [
            "export",
            "--keras-model",
            str(keras_model),
            "--config",
            str(config),
            "--data-dir",
            str(mnist_small_dir),
            "--out-dir",
            str(tmp_path / "models"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert rc == 0
    assert digits_run.export is not None and digits_run.export.serving is not None
    exported = load_bundle(tmp_path / "models" / "mini-digits")
    assert exported.metadata.primary_metrics is not None
    assert exported.metadata.primary_metrics.accuracy == digits_run.export.serving.report.accuracy
    rc = cli(
        [
            "evaluate",
            "--bundle",
            str(exported.path),
            "--data-dir",
            str(mnist_small_dir),
            "--keras-model",
            str(keras_model),
            "--limit",
            "100",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "n=100" in out and "same top-1 as the serving path on 100.0000%" in out
    # Without --keras-model, the run that produced the bundle's exact ONNX is found in runs/.
    assert digits_run.export.bundle is not None
    rc = cli(
        [
            "evaluate",
            "--bundle",
            str(digits_run.export.bundle.path),
            "--data-dir",
            str(mnist_small_dir),
            "--runs-dir",
            str(digits_run.run_dir.parent),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and f"Keras model: {keras_model}" in out and "n=300" in out


@pytest.mark.slow
def test_cifar_bird_one_vs_rest_through_the_cli(
    tmp_path: Path, cifar_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m training train --config X` dispatches through the recipe registry."""
    cfg = small_config(
        name="mini-bird",
        data={"source": "cifar10", "binary_positive": "bird", "val_fraction": 0.2},
        input={"height": 32, "width": 32, "channels": 3, "color": "rgb"},
        model={"architecture": "bird_cnn", "kwargs": {"embedding_dim": 32}},
        augment={"flip_horizontal": True},
        train={"epochs": 5, "batch_size": 32, "class_weight": "balanced", "verbose": 0},
        export={"parity_samples": 16},
    )
    # Named unlike the config's `name` (as cifar10-bird.yaml is `cifar-bird`): the card used to
    # name training/configs/<name>.yaml, a file that does not exist.
    config = tmp_path / "bird-vs-rest-small.yaml"
    config.write_text(cfg.to_yaml())
    argv = ["train", "--config", str(config), "--data-dir", str(cifar_dir.parent)]
    argv += ["--out-dir", str(tmp_path / "models"), "--runs-dir", str(tmp_path / "runs")]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "mini-bird (scratch recipe)" in out and "n=200 (onnxruntime)" in out
    bundle = load_bundle(tmp_path / "models" / "mini-bird")
    assert bundle.labels == ("not_bird", "bird") and bundle.metadata.num_classes == 2
    m = bundle.metadata.primary_metrics
    assert m is not None and m.n_samples == 200 and m.accuracy is not None
    y_test = np.asarray(load_cifar10(cifar_dir, "bird").y_test)
    majority = max(np.bincount(y_test)) / len(y_test)
    assert m.accuracy > majority + 0.1  # the blob marks birds: learnable beyond the majority
    assert m.extra["top2_accuracy"] >= m.accuracy
    card = (bundle.path / "README.md").read_text()
    # with the folder it read (round 28: the line failed without --data-dir)
    assert f"`python -m training train --config {config} --data-dir {cifar_dir.parent}`" in card
    assert bundle.metadata.provenance.notes is not None
    assert bundle.metadata.provenance.notes.endswith(f"config {config}")
    # the run folder says which folders it read and wrote (config.yaml cannot)
    (run_dir,) = (tmp_path / "runs").iterdir()
    command = json.loads((run_dir / "command.json").read_text())
    assert command["argv"] == argv and "--data-dir" in command["command"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"architecture": "tiny_cn"}, "model: unknown architecture 'tiny_cn'; choose one of"),
        (
            {"architecture": "tiny_cnn", "kwargs": {"widht": 3}},
            "model: architecture 'tiny_cnn' takes no 'widht'; its options: filters, embedding_dim",
        ),
    ],
    ids=["unknown-architecture", "unknown-option"],
)
def test_a_wrong_model_section_is_one_line_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: dict[str, object], message: str
) -> None:
    """Both were a ValueError/TypeError traceback, raised after the data was loaded and the
    run folder made. Now: one `error:` line, exit 2, no data read (the data folder here does
    not exist), no run folder."""
    config = tmp_path / "c.yaml"
    config.write_text(small_config(name="wrong-model", model=model).to_yaml())
    argv = ["train", "--config", str(config), "--data-dir", str(tmp_path / "no-data")]
    assert cli([*argv, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: wrong-model: {message}")
    assert not (tmp_path / "runs").exists()


def test_serving_eval_needs_no_tensorflow() -> None:
    code = (
        "import sys, training.serving_eval, training.data, app.metrics, app.card, app.bundle_write;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'yaml')];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
