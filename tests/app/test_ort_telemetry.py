"""onnxruntime >= 1.32 keeps a device id and an event database under $HOME/.cache/Microsoft
and queues them for upload. Importing the server (or training/, bench/) opts out first, unless
the operator set ORT_DISABLE_TELEMETRY."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SESSION = (
    "import onnxruntime as ort; "
    f"ort.InferenceSession({str(ROOT / 'models' / 'products' / 'model.onnx')!r}, "
    "providers=['CPUExecutionProvider'])"
)


# onnxruntime keeps no telemetry when it sees one of these (a CI machine) and writes under
# $XDG_CACHE_HOME when set; the control below needs neither.
NOT_PASSED = {
    "ORT_DISABLE_TELEMETRY",
    "XDG_CACHE_HOME",
    "CI",
    "TF_BUILD",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "CIRCLECI",
    "TRAVIS",
    "JENKINS_URL",
    "CODEBUILD_BUILD_ID",
    "BUILDKITE",
    "TEAMCITY_VERSION",
    "APPVEYOR",
    "BITBUCKET_BUILD_NUMBER",
}


def run(code: str, home: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in NOT_PASSED}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "HOME": str(home), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def telemetry_files(home: Path) -> list[Path]:
    """onnxruntime's telemetry folder (other libraries keep their own caches under ~/.cache)."""
    folder = home / ".cache" / "Microsoft"
    return sorted(folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize(
    "package",
    ["app.runtime", pytest.param("training.export", marks=pytest.mark.slow), "bench.model_cost"],
)
def test_loading_a_model_through_the_project_leaves_no_telemetry(
    tmp_path: Path, package: str
) -> None:
    run(f"import {package}; {SESSION}", tmp_path)
    assert telemetry_files(tmp_path) == []


def test_onnxruntime_alone_does_keep_telemetry(tmp_path: Path) -> None:
    """The control: without the opt-out this onnxruntime writes its files (so the test above
    can fail)."""
    run(SESSION, tmp_path)
    files = telemetry_files(tmp_path)
    if not files:
        # Seen once on a CI machine before NOT_PASSED existed: onnxruntime also decides by
        # things a test cannot take away. The tests above then prove nothing here, and say so.
        pytest.skip("onnxruntime kept no telemetry on this machine even without the opt-out")
    assert any(p.name == "deviceid" for p in files)


def test_the_operators_own_setting_is_kept(tmp_path: Path) -> None:
    got = run(
        "import app, os; print(os.environ['ORT_DISABLE_TELEMETRY'])",
        tmp_path,
        ORT_DISABLE_TELEMETRY="0",
    )
    assert got.strip() == "0"
