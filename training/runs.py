"""The one run-directory layout, shared by every recipe (TensorFlow-free).

runs/<name>-<YYYYmmdd-HHMMSS>/
    config.yaml      the resolved config (every default spelled out): what ran
    command.json     how it was started: the command line, the working folder, the time
    metrics.json     what was measured; every figure names its data set, split and n
    bundle/<name>/   the staged bundle that was evaluated (the shipped one has its sha256)
    model.keras      the Keras model behind the bundle (recipes that train)
    ...              recipe extras (history.csv, plots, splits)
"""

from __future__ import annotations

import json
import os
import platform
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.config import RecipeBase

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
COMMAND_FILE = "command.json"
STAGED_BUNDLES = "bundle"

# The command line that is running, set by `python -m training` around a subcommand: a run's
# config.yaml says what ran, but not which --data-dir, --out-dir or --epochs it ran with.
_COMMAND: ContextVar[list[str] | None] = ContextVar("training_command", default=None)


@contextmanager
def command_line(argv: list[str]) -> Iterator[None]:
    """Within this block every new run directory records `argv` in command.json."""
    token = _COMMAND.set(list(argv))
    try:
        yield
    finally:
        _COMMAND.reset(token)


def _write_command(run_dir: Path) -> None:
    argv = _COMMAND.get()
    if argv is None:  # a run started from Python, not from the command line
        return
    record = {
        "command": shlex.join(["python", "-m", "training", *argv]),
        "argv": argv,
        "cwd": os.getcwd(),
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "host": platform.node(),
    }
    (run_dir / COMMAND_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """A fresh, empty run directory named after the config and the start time."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = runs_dir / f"{name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = runs_dir / f"{name}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def start_run(runs_dir: Path, cfg: RecipeBase, suffix: str = "") -> Path:
    """New run directory holding the resolved config (and the command line, when run from one)."""
    run_dir = new_run_dir(runs_dir, cfg.name + suffix)
    (run_dir / CONFIG_FILE).write_text(cfg.to_yaml(), encoding="utf-8")
    _write_command(run_dir)
    return run_dir


def config_shown(config_path: Path | None) -> str:
    """The config file as a card or a provenance note names it: the file that was run (a
    config's `name` need not be its file name: cifar10-bird.yaml is `cifar-bird`), relative to
    the working folder where it lies inside it; "<this config>" when no file is known."""
    if config_path is None:
        return "<this config>"
    path = Path(config_path)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return str(path)


def reproduce_command(config_path: Path | None, *extra: str) -> str:
    """`python -m training train --config <the file that was run> [extra ...]`."""
    return " ".join(("python -m training train --config", config_shown(config_path), *extra))


def write_metrics(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = run_dir / METRICS_FILE
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return path
