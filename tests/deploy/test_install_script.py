"""scripts/install skips pip once the set is installed for this pyproject.toml (a stamp in .venv).

scripts/serve runs it on every start; `pip install -e .` there needed setuptools from a package
index, so an offline restart failed though everything was installed. Run against a stand-in
.venv whose python only records its arguments: seconds, no network, no real install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SHIM = '#!/bin/sh\necho "$*" >>"$CALLS"\n'


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "install", root / "scripts" / "install")
    (root / "pyproject.toml").write_text('[project]\nname = "imgclass"\n')
    for venv in (".venv", ".venv-kserve"):  # kserve's venv "has" kserve: the shim exits 0
        python = root / venv / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(SHIM)
        python.chmod(0o755)
    return root


def _install(root: Path, what: str) -> list[str]:
    """The pip commands one run of scripts/install makes."""
    calls = root / "calls.log"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "CALLS": str(calls)}
    run = subprocess.run(
        ["bash", str(root / "scripts" / "install"), what],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [line for line in lines if line.startswith("-m pip") and "pip check" not in line]


def test_a_second_run_does_not_call_pip_until_pyproject_changes(tmp_path: Path) -> None:
    root = _project(tmp_path)
    first = _install(root, "serve")
    assert any(c.endswith("install --quiet --disable-pip-version-check -e .") for c in first)
    assert _install(root, "serve") == []  # offline restarts work: no index needed
    with (root / "pyproject.toml").open("a") as f:
        f.write('dependencies = ["fastapi"]\n')
    assert any("-e ." in c for c in _install(root, "serve"))  # changed: installed again
    assert _install(root, "serve") == []
    everything = _install(root, "all")  # serve's stamp does not cover train and dev
    assert any("-e .[train,dev]" in c for c in everything), everything
    assert _install(root, "all") == [] and _install(root, "serve") == []


def test_no_stamp_is_left_when_pip_fails(tmp_path: Path) -> None:
    root = _project(tmp_path)
    python = root / ".venv" / "bin" / "python"
    python.write_text(SHIM + 'case "$*" in *"-e ."*) exit 1 ;; esac\n')
    calls = root / "calls.log"
    run = subprocess.run(
        ["bash", str(root / "scripts" / "install"), "serve"],
        env={**os.environ, "CALLS": str(calls)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert not list((root / ".venv").glob(".imgclass-installed-*"))
    python.write_text(SHIM)
    assert _install(root, "serve")  # tried again, not skipped


def test_a_venv_missing_a_requirement_is_installed_again(tmp_path: Path) -> None:
    """Round 25: with the stamp in place, a venv that had lost a dependency (onnxruntime, the
    Swagger UI package) was skipped, and every start ended in a traceback telling the user to
    run scripts/install, which did nothing. `pip check` failing means: install again."""
    root = _project(tmp_path)
    assert _install(root, "serve")
    assert _install(root, "serve") == []
    python = root / ".venv" / "bin" / "python"
    python.write_text(SHIM + 'case "$*" in "-m pip check"*) exit 1 ;; esac\n')
    assert any("-e ." in c for c in _install(root, "serve"))


def test_a_venv_installed_from_another_checkout_is_installed_again(tmp_path: Path) -> None:
    """Round 39: a git worktree sharing this venv installed imgclass from itself; with the
    worktree gone, `import app` failed from anywhere but the checkout's own folder while the
    stamp and the package's metadata said installed. The check asks where `app` is found."""
    root = _project(tmp_path)
    assert _install(root, "serve")
    assert _install(root, "serve") == []
    python = root / ".venv" / "bin" / "python"
    python.write_text(SHIM + 'case "$*" in *find_spec*) exit 1 ;; esac\n')
    assert any("-e ." in c for c in _install(root, "serve"))
