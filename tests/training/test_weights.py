"""training/weights: the PyTorch checkpoint reader (no PyTorch needed)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, ROOT, require

FIXTURES = ROOT / "tests" / "fixtures"
WEIGHTS = DATA / "weights" / "efficientnet-lite0-57934424.pth"


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
