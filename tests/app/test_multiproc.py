"""app/multiproc.py: the metrics folder of a server with several processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from app import multiproc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folders_of_servers_that_died_unable_to_clean_up_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 40: a parent killed with SIGKILL left its folder in /tmp for good. Each folder
    is named after its server's pid; the next server removes those whose process is gone."""
    dead = tmp_path / f"imgclass-metrics-{_dead_pid()}-abc"
    live = tmp_path / f"imgclass-metrics-{os.getpid()}-def"
    old = tmp_path / "imgclass-metrics-k2j4h5"  # an older server's name: whose, unknown
    other = tmp_path / f"not-ours-{_dead_pid()}-x"
    for folder in (dead, live, old, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"x")
    monkeypatch.setenv(multiproc.MULTIPROC_ENV, "")  # so that the test's own setting is undone
    monkeypatch.delenv(multiproc.MULTIPROC_ENV)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made = multiproc.prepare_multiprocess_dir(2)
    assert made is not None and made.parent == tmp_path
    assert made.name.startswith(f"imgclass-metrics-{os.getpid()}-")
    assert not dead.exists()
    assert live.exists() and old.exists() and other.exists()
    assert os.environ[multiproc.MULTIPROC_ENV] == str(made)
