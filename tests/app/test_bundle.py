"""The bundle contract: schema validation, verification and refusal reasons."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from app.bundle import (
    BundleError,
    BundleMetadata,
    InputSpec,
    TensorInfo,
    check_io,
    load_bundle,
)
from app.bundle_files import read_labels
from tests.onnx_graphs import LABELS, write_tiny_bundle


def copy_bundle(src: Path, dst_root: Path, name: str = "tiny") -> Path:
    dst = dst_root / name
    shutil.copytree(src, dst)
    return dst


def edit_metadata(bundle: Path, **changes: object) -> None:
    path = bundle / "metadata.json"
    raw = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = raw
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    path.write_text(json.dumps(raw))


def test_tiny_bundle_loads_and_round_trips(tiny_models_dir: Path) -> None:
    bundle = load_bundle(tiny_models_dir / "tiny")
    meta = bundle.metadata
    assert meta.num_classes == len(bundle.labels) == 10
    assert meta.input.name == "image" and meta.outputs.probs.name == "probs"
    assert meta.outputs.embedding is not None and meta.outputs.embedding.dim == 32
    again = BundleMetadata.model_validate_json(meta.model_dump_json())
    assert again == meta


def test_hash_mismatch_is_refused(tiny_models_dir: Path, tmp_path: Path) -> None:
    b = copy_bundle(tiny_models_dir / "tiny", tmp_path)
    data = bytearray((b / "model.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    (b / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(b)


def test_label_count_mismatch_is_refused(tiny_models_dir: Path, tmp_path: Path) -> None:
    b = copy_bundle(tiny_models_dir / "tiny", tmp_path)
    labels = (b / "labels.txt").read_text().splitlines()
    (b / "labels.txt").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(BundleError, match="9 labels"):
        load_bundle(b)


def test_folder_and_name_must_agree(tiny_models_dir: Path, tmp_path: Path) -> None:
    b = copy_bundle(tiny_models_dir / "tiny", tmp_path, name="other")
    with pytest.raises(BundleError, match="folder name"):
        load_bundle(b)


def test_schema_violation_is_refused(tiny_models_dir: Path, tmp_path: Path) -> None:
    b = copy_bundle(tiny_models_dir / "tiny", tmp_path)
    edit_metadata(b, input__channels=2)
    with pytest.raises(BundleError, match="schema"):
        load_bundle(b)


def test_duplicate_labels_rejected(tmp_path: Path) -> None:
    p = tmp_path / "labels.txt"
    p.write_text("a\nb\na\n")
    with pytest.raises(BundleError, match="duplicate"):
        read_labels(p)


def test_input_spec_rules() -> None:
    with pytest.raises(ValueError):
        InputSpec(height=28, width=28, channels=1, color="rgb")
    with pytest.raises(ValueError):
        InputSpec(
            height=8,
            width=8,
            channels=3,
            color="rgb",
            normalization={"in_graph": False, "mean": [0.5], "std": [0.5]},  # type: ignore[arg-type]
        )


def test_check_io_names_and_shapes(tiny_models_dir: Path) -> None:
    meta = load_bundle(tiny_models_dir / "tiny").metadata
    good_in = [TensorInfo("image", ("N", 28, 28, 1))]
    good_out = [TensorInfo("probs", ("N", 10)), TensorInfo("embedding", ("N", 32))]
    check_io(meta, good_in, good_out)
    with pytest.raises(BundleError, match="exactly 1"):
        check_io(meta, [*good_in, TensorInfo("mean", (1,))], good_out)
    with pytest.raises(BundleError, match="shape"):
        check_io(meta, [TensorInfo("image", ("N", 32, 32, 1))], good_out)
    with pytest.raises(BundleError, match="no output 'embedding'"):
        check_io(meta, good_in, good_out[:1])
    with pytest.raises(BundleError, match="shape"):
        check_io(meta, good_in, [TensorInfo("probs", ("N", 9)), good_out[1]])


# Hostile bundles (a checker's probes): each is refused with a reason naming the file and the
# fault, never loaded with a silently wrong meaning. Built from tiny onnx.helper graphs.


def _raw_metadata(bundle: Path) -> dict[str, object]:
    raw: dict[str, object] = json.loads((bundle / "metadata.json").read_text())
    return raw


def test_labels_with_a_byte_order_mark_lose_it(tmp_path: Path) -> None:
    b = write_tiny_bundle(tmp_path, "bom").path
    (b / "labels.txt").write_bytes(b"\xef\xbb\xbfcat\r\ndog\r\neel\r\n")
    assert load_bundle(b).labels == LABELS  # not "\ufeffcat"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"cat\n\xff\xfedog\neel\n", r"labels.txt: labels file is not UTF-8 text \(byte 0xff"),
        (b"cat\ndo\x1b[31mg\neel\n", "line 2 holds a control"),
        (b"cat\ndog\n" + b"e" * 300 + b"\n", "line 3 is longer than 256"),
        (b"cat\n\ndog\n", "line 2 is an empty label"),
        (b"cat\ndog\ndog\n", "duplicate labels 'dog'"),
        (b"cat\ndog\neel\n" + b"\n" * (5 << 20), "larger than 4,194,304 bytes"),
    ],
    ids=["non-utf8", "control", "long", "empty-line", "duplicate", "huge"],
)
def test_bad_labels_file_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    b = write_tiny_bundle(tmp_path, "bad").path
    (b / "labels.txt").write_bytes(content)
    with pytest.raises(BundleError, match=reason):
        load_bundle(b)


NAN, INF = "__nan__", "__inf__"  # json.dumps cannot write NaN into a str; swapped in below
NORM = {"in_graph": False, "mean": [0.5], "std": [0.5]}


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("input.height", "8", "input.height: Input should be a valid integer"),
        ("input.normalization", {**NORM, "std": [NAN]}, "std.0: Input should be a finite"),
        ("input.normalization", {**NORM, "mean": [INF]}, "mean.0: Input should be a finite"),
        ("input.normalization", {**NORM, "std": [1e-300]}, "std values must be at least 1e-06"),
        ("input.pixel_range", [0, INF], "pixel_range.1: Input should be a finite number"),
        ("labels_file", "../other/labels.txt", "labels_file: String should match pattern"),
        ("artifact.file", "/etc/passwd", "artifact.file: String should match pattern"),
        ("version", "1\n../x", "version: String should match pattern"),
    ],
    ids=[
        "height-as-string",
        "std-nan",
        "mean-inf",
        "std-tiny",
        "range-inf",
        "labels-path",
        "model-path",
        "version-newline",
    ],
)
def test_metadata_with_wrong_values_is_refused(
    tmp_path: Path, path: str, value: object, reason: str
) -> None:
    b = write_tiny_bundle(tmp_path, "bad").path
    raw = _raw_metadata(b)
    node = raw
    *parents, key = path.split(".")
    for k in parents:
        node = node[k]  # type: ignore[assignment,index]
    node[key] = value  # type: ignore[index]
    text = json.dumps(raw).replace(f'"{NAN}"', "NaN").replace(f'"{INF}"', "Infinity")
    (b / "metadata.json").write_text(text)
    with pytest.raises(BundleError, match="metadata does not match the schema") as err:
        load_bundle(b)
    assert reason in str(err.value)


def test_metadata_that_is_not_utf8_or_json_says_so(tmp_path: Path) -> None:
    b = write_tiny_bundle(tmp_path, "bad").path
    (b / "metadata.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(BundleError, match=r"metadata.json: metadata is not UTF-8 text"):
        load_bundle(b)
    (b / "metadata.json").write_text("[]")
    with pytest.raises(BundleError, match=r"\(top level\): Input should be an object"):
        load_bundle(b)


def test_metadata_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    """JSON readers keep a repeated key's last value: '"in_graph": true, ..., "in_graph": false'
    would mean whatever the last one says, unseen by a reader of the first."""
    b = write_tiny_bundle(tmp_path, "bad").path
    text = (b / "metadata.json").read_text()
    (b / "metadata.json").write_text(
        text.replace('"version": "1",', '"version": "1", "version": "2",')
    )
    with pytest.raises(BundleError, match="metadata gives the key 'version' more than once"):
        load_bundle(b)


def test_a_file_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(BundleError, match="not a bundle folder"):
        load_bundle(tmp_path / "afile")


def test_symlinks_out_of_the_models_folder_are_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    outside = write_tiny_bundle(tmp_path, "elsewhere").path
    models.mkdir()
    (models / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(BundleError, match="outside"):
        load_bundle(models / "linked", name="elsewhere")
    b = write_tiny_bundle(models, "model-link").path
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to(outside / "model.onnx")
    with pytest.raises(BundleError, match=r"model\.onnx: a symlink to a file outside"):
        load_bundle(b)
    # A link that stays inside the models folder is fine (e.g. a shared file).
    (b / "model.onnx").unlink()
    (models / "blob.onnx").write_bytes((outside / "model.onnx").read_bytes())
    (b / "model.onnx").symlink_to(models / "blob.onnx")
    assert load_bundle(b).labels == LABELS


def test_a_fifo_or_a_symlink_out_as_metadata_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO metadata.json blocked the loader (and the server's readiness) for good."""
    models = tmp_path / "models"
    b = write_tiny_bundle(models, "fifo").path
    (b / "metadata.json").unlink()
    os.mkfifo(b / "metadata.json")
    errors: list[BaseException] = []

    def load() -> None:
        try:
            load_bundle(b)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # release the blocked reader, then fail instead of hanging
        os.close(os.open(b / "metadata.json", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading a bundle whose metadata.json is a FIFO blocked")
    assert isinstance(errors[0], BundleError)
    assert "metadata.json: not a regular file inside" in str(errors[0])
    outside = write_tiny_bundle(tmp_path, "elsewhere").path
    b = write_tiny_bundle(models, "elsewhere").path
    (b / "metadata.json").unlink()
    (b / "metadata.json").symlink_to(outside / "metadata.json")
    with pytest.raises(BundleError, match=r"metadata\.json: not a regular file inside"):
        load_bundle(b)
