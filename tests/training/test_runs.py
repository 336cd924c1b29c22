"""training/runs.py: one run-directory layout for every recipe."""

from __future__ import annotations

import json
from pathlib import Path

from training import runs
from training.config import ScratchConfig
from training.recipes import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_start_run_writes_the_resolved_config_and_never_reuses_a_folder(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "training" / "configs" / "digits.yaml", ScratchConfig)
    a = runs.start_run(tmp_path, cfg)
    b = runs.start_run(tmp_path, cfg)
    assert a != b and a.name.startswith("digits-") and b.name.startswith("digits-")
    assert load_config(a / runs.CONFIG_FILE) == cfg
    path = runs.write_metrics(a, {"n": 3, "where": a})
    assert json.loads(path.read_text()) == {"n": 3, "where": str(a)}


def test_a_run_started_from_the_command_line_records_it(tmp_path: Path) -> None:
    """config.yaml says what ran, not with which folders: command.json keeps the command line."""
    cfg = load_config(ROOT / "training" / "configs" / "digits.yaml", ScratchConfig)
    argv = ["train", "--config", "my digits.yaml", "--data-dir", "/data/x", "--out-dir", "out"]
    with runs.command_line(argv):
        run_dir = runs.start_run(tmp_path, cfg)
    record = json.loads((run_dir / runs.COMMAND_FILE).read_text())
    assert record["argv"] == argv
    assert record["command"] == (
        "python -m training train --config 'my digits.yaml' --data-dir /data/x --out-dir out"
    )
    assert record["cwd"] and record["started_utc"].endswith("+00:00")
    # outside a command line (a run started from Python) there is nothing to record
    assert not (runs.start_run(tmp_path, cfg) / runs.COMMAND_FILE).exists()
