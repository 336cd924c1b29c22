"""python -m training: a bad config or data folder is one `error:` line and exit 2, never a
traceback (run as a real subprocess, as a user would)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = (
    pytest.mark.slow
)  # training command lines in subprocesses (round 29: the fast subset in 2 min)

ROOT = Path(__file__).resolve().parents[2]
LECTURE = (ROOT / "training" / "configs" / "lecture-cnn.yaml").read_text()


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read the config (No such file or directory)"),
        (
            LECTURE.replace("name: lecture-cnn", "recipe: nosuch\nname: x"),
            "unknown recipe 'nosuch'",
        ),
        (LECTURE + "bogus_key: 1\n", "bogus_key: Extra inputs are not permitted (got 1)"),
        (LECTURE.replace("epochs: 5", "epochs: five"), "train.epochs: Input should be a valid"),
        (LECTURE.replace("seed: 7", ""), "seed: Field required"),
        ("name: x\n  bad: [yaml\n", "not valid YAML at line 2, column 6"),
        ("", "expected a YAML mapping"),
        (LECTURE.replace("name: lecture-cnn", "name: ../x"), "name: Value error, name must be"),
        (LECTURE.replace("seed: 7", "seed: 7\nseed: 8"), "key 'seed' is given twice"),
    ],
    ids=[
        "missing",
        "unknown-recipe",
        "unknown-key",
        "wrong-type",
        "no-seed",
        "bad-yaml",
        "empty",
        "bad-name",
        "key-twice",
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, text: str | None, message: str) -> None:
    cfg = tmp_path / "cfg.yaml"
    if text is not None:
        cfg.write_text(text)
    r = run_cli("train", "--config", cfg, "--no-export", "--runs-dir", tmp_path / "runs")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {cfg}: ") and message in lines[0]


@pytest.mark.slow  # the runner imports TensorFlow before it reads the folder
def test_a_folder_with_an_empty_class_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for cls, n in (("red", 4), ("blue", 0)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (200, 10 * i, 0)).save(tmp_path / "data" / cls / f"{i}.png")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text((ROOT / "training" / "configs" / "folder-example.yaml").read_text())
    r = run_cli(
        "train", "--config", cfg, "--data-dir", tmp_path / "data", "--no-export",
        "--runs-dir", tmp_path / "runs", timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {tmp_path / 'data'}: need at least 2 class subfolders")
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("command", ["evaluate", "quantize"])
def test_a_broken_bundle_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    """`evaluate` and the delegated `quantize` print the bundle's refusal reason, not a
    traceback (BundleError was uncaught, and delegated commands bypassed the handler)."""
    from tests.onnx_graphs import write_tiny_bundle

    b = write_tiny_bundle(tmp_path, "tiny").path
    (b / "labels.txt").write_text("cat\ndog\n")
    args = ["--name", "tiny-int8", "--out-dir", tmp_path] if command == "quantize" else []
    r = run_cli(command, "--bundle", b, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {b}: labels.txt has 2 labels, metadata says 3"
    )


@pytest.mark.parametrize("command", ["eval-bundles", "evaluate --bundle"])
def test_a_bundle_without_an_official_test_split_is_one_line(tmp_path: Path, command: str) -> None:
    from tests.onnx_graphs import write_tiny_bundle

    b = write_tiny_bundle(tmp_path, "tiny").path  # records no metrics at all
    r = run_cli(*command.split(), b)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: tiny: metadata records no test-split accuracy to check against"
    )


@pytest.mark.parametrize("args", [["train", "--epochs", "0"], ["evaluate", "--limit", "-5"]])
def test_counts_below_one_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    """--epochs 0 trained nothing and crashed reading best.weights.h5; --limit -5 silently
    dropped the last five test images."""
    extra = ["--config", tmp_path / "c.yaml"] if args[0] == "train" else ["--bundle", tmp_path]
    r = run_cli(*args, *extra)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(f"must be at least 1, got {args[2]}")


def test_an_output_folder_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    """It was found only at the export, after the whole training run (NotADirectoryError)."""
    (tmp_path / "models").write_text("a file")
    r = run_cli("train", "--config", tmp_path / "c.yaml", "--out-dir", tmp_path / "models")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1].endswith(f"{tmp_path / 'models'} is a file, not a folder")
    )


@pytest.mark.slow  # the pretrained head imports TensorFlow
def test_evaluate_advises_only_what_works_per_bundle_kind() -> None:
    """`evaluate --bundle models/imagenet` advised `--config CONFIG`, and `--config
    training/configs/imagenet.yaml` was then refused ("needs ScratchConfig")."""
    from app.bundle import load_bundle

    r = run_cli("evaluate", "--bundle", "models/imagenet")
    advice = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "scratch, transfer or pretrained config" in advice
    assert "evaluate --bundle DIR --config CONFIG" in advice
    r = run_cli(
        "evaluate", "--bundle", "models/imagenet", "--config", "training/configs/imagenet.yaml"
    )
    assert r.returncode == 0, r.stderr
    recorded = load_bundle(ROOT / "models" / "imagenet").metadata.metrics[0]
    assert f"test split, n={recorded.n_samples}" in r.stdout
    assert f"accuracy {recorded.accuracy:.4%} (recorded {recorded.accuracy:.4%})" in r.stdout
    assert f"top-5 {recorded.top5_accuracy:.4%}" in r.stdout
    # Emoji bundles are measured by their run (leave-one-style-out): that is what it says.
    config = "training/configs/bird-emoji-identity.yaml"
    r = run_cli("evaluate", "--bundle", "models/bird", "--config", config)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .endswith(f"python -m training train --config {config} --out-dir DIR")
    )


@pytest.mark.slow  # imports TensorFlow
@pytest.mark.parametrize("kind", ["not-keras", "missing", "wrong-shape"])
def test_a_keras_model_that_cannot_be_used_is_one_error_line(tmp_path: Path, kind: str) -> None:
    """Round 28: a --keras-model that is not a .keras file, is missing (for evaluate) or takes
    other inputs was a traceback, and export left a half-written run directory."""
    path = tmp_path / ("m.keras" if kind != "not-keras" else "m.yaml")
    if kind == "not-keras":
        path.write_text("name: not a model\n")
    elif kind == "wrong-shape":
        import keras

        inputs = keras.Input((64, 64, 3))
        keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs))).save(path)
    runs = tmp_path / "runs"
    config = ROOT / "training" / "configs" / "digits.yaml"
    for args in (
        ["export", "--config", config, "--keras-model", path, "--runs-dir", runs],
        ["evaluate", "--bundle", ROOT / "models" / "digits", "--keras-model", path, "--limit", "8"],
    ):
        r = run_cli(*args, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {path}: "), line
        assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow  # reads Fashion-MNIST
def test_evaluate_refuses_a_config_that_did_not_build_the_bundle() -> None:
    """Round 28: `evaluate --bundle models/digits --config products.yaml` scored digits on
    Fashion-MNIST (13.5%, exit 0): the labels of a scratch config were never compared."""
    r = run_cli(
        "evaluate", "--bundle", ROOT / "models" / "digits",
        "--config", ROOT / "training" / "configs" / "products.yaml", "--limit", "20",
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: digits: its labels") and "Fashion-MNIST" in line, line


def _refused_export(config: Path, model_path: Path, out: Path, runs: Path) -> str:
    """`export` refused with one `error:` line (exit 2, no traceback): that line."""
    r = run_cli(
        "export", "--config", config, "--keras-model", model_path,
        "--out-dir", out, "--runs-dir", runs, timeout=600,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stderr.strip().splitlines()[-1]


@pytest.mark.slow  # imports TensorFlow, reads MNIST
def test_an_export_that_is_not_faithful_to_keras_is_one_error_line(tmp_path: Path) -> None:
    """The parity refusal (onnxruntime against Keras beyond `export.parity_atol`) is one
    `error:` line, exit 2, and no bundle is written. A tolerance of 1e-12 makes float32
    rounding alone unfaithful, so the real check refuses a real export."""
    import yaml

    from training.config import ScratchConfig
    from training.recipes import load_config
    from training.train import build_model

    raw = yaml.safe_load((ROOT / "training" / "configs" / "digits.yaml").read_text())
    raw["export"] = {**raw.get("export", {}), "parity_atol": 1e-12, "parity_samples": 8}
    config = tmp_path / "digits-strict.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config, ScratchConfig)
    model_path = tmp_path / "m.keras"
    build_model(cfg, 10).save(model_path)  # MNIST digits
    out = tmp_path / "models"
    line = _refused_export(config, model_path, out, tmp_path / "runs")
    assert line.startswith("error: onnxruntime differs from Keras by "), line
    assert line.endswith("on 8 real inputs; refusing to write the bundle"), line
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow  # imports TensorFlow, reads MNIST
def test_an_export_for_other_classes_is_one_error_line(tmp_path: Path) -> None:
    """Round 44: a model of 3 classes exported with a 4-class folder was a traceback (and 3
    other names wrote a bundle with wrong labels): the data's classes must be the model's."""
    from training.config import ScratchConfig
    from training.recipes import load_config
    from training.train import build_model

    config = ROOT / "training" / "configs" / "digits.yaml"
    model_path = tmp_path / "m.keras"
    build_model(load_config(config, ScratchConfig), 3).save(model_path)
    out = tmp_path / "models"
    line = _refused_export(config, model_path, out, tmp_path / "runs")
    assert "the model tells 3 classes apart, the data has 10" in line, line
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["file-at-bundle", "out-dir-in-proc", "runs-dir-under-a-file"])
def test_outputs_that_cannot_be_written_are_refused_before_training(
    tmp_path: Path, case: str
) -> None:
    """Round 44: a file at <out-dir>/<name> was moved into the staging folder and the run
    ended in a traceback after the whole fit; an out-dir in /proc or a runs dir under a file
    were tracebacks too."""
    config = ROOT / "training" / "configs" / "folder-example.yaml"
    out, runs = tmp_path / "models", tmp_path / "runs"
    if case == "file-at-bundle":
        out.mkdir()
        (out / "folder-example").write_text("mine")
    elif case == "out-dir-in-proc":
        out = Path("/proc/imgclass-nowhere")
    else:
        (tmp_path / "afile").write_text("x")
        runs = tmp_path / "afile" / "runs"
    r = run_cli("train", "--config", config, "--out-dir", out, "--runs-dir", runs)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "Epoch" not in r.stdout + r.stderr  # refused before training
    line = r.stderr.strip().splitlines()[-1]
    said = {
        "file-at-bundle": "folder-example is a file; it is not replaced",
        "out-dir-in-proc": "a bundle cannot be written there",
        "runs-dir-under-a-file": "afile is not a folder); choose another --runs-dir",
    }[case]
    assert line.startswith("error: ") and said in line, line
    if case == "file-at-bundle":
        assert (out / "folder-example").read_text() == "mine"
