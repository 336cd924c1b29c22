"""The bundle contract: schema validation, verification and refusal reasons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.bundle import (
    BundleError,
    BundleMetadata,
    InputSpec,
    TensorInfo,
    check_io,
    load_bundle,
    read_labels,
)


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
