"""Model folders this server's user cannot read (a mount of another owner's 0700 folder, a
bundle copied without `chmod -R a+rX`): round 29 found that one such bundle folder killed the
loader thread with a traceback, and every bundle, good ones too, stayed "loading" forever.

As root the server runs held to file modes (tests/unprivileged.py); a folder of mode 000 is
then as closed to it as to any other user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.unprivileged import held_to_file_modes


@pytest.fixture
def models(tiny_models_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """A models folder with the good `tiny` bundle and a closed copy of it, `a-closed`."""
    out = tmp_path / "models"
    out.mkdir()
    shutil.copytree(tiny_models_dir / "tiny", out / "tiny")
    shutil.copytree(tiny_models_dir / "tiny", out / "a-closed")
    (out / "a-closed").chmod(0)
    yield out
    (out / "a-closed").chmod(0o755)
    out.chmod(0o755)


LOAD = """
import json, sys
from pathlib import Path
from app.registry import ModelRegistry
reg = ModelRegistry(Path(sys.argv[1]), providers="cpu")
reg.load_all()
print(json.dumps({"served": reg.names(), "refused": reg.refused(), "pending": reg.pending(),
                  "finished": reg.loading_finished}))
"""


def test_a_bundle_folder_it_cannot_enter_is_refused_and_the_rest_served(models: Path) -> None:
    r = subprocess.run(
        [*held_to_file_modes(), sys.executable, "-c", LOAD, str(models)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    state = json.loads(r.stdout.strip().splitlines()[-1])
    assert state["served"] == ["tiny"] and state["pending"] == [] and state["finished"]
    assert list(state["refused"]) == ["a-closed"]
    assert "Permission denied" in state["refused"]["a-closed"]


def test_a_models_folder_it_cannot_list_stops_start_up_in_one_line(
    models: Path, tmp_path: Path
) -> None:
    models.chmod(0)
    env = {
        **os.environ,
        "IMGCLASS_MODELS_DIR": str(models),
        "IMGCLASS_DATA_DIR": str(tmp_path / "data"),
        "IMGCLASS_PORT": "18997",  # never bound: start-up stops before
        "IMGCLASS_WORKERS": "1",
    }
    r = subprocess.run(
        [*held_to_file_modes(), sys.executable, "-m", "app"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    assert f"the folder {models} (IMGCLASS_MODELS_DIR) cannot be read: Permission denied" in line
