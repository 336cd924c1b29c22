"""The shared core (docs/architecture.md) imports neither TensorFlow nor FastAPI."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "app.bundle",
    "app.bundle_files",
    "app.bundle_io",
    "app.bundle_write",
    "app.metrics",
    "app.card",
    "app.imaging",
    "app.tensorize",
    "app.runtime",
    "app.errors",
]


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_web_framework_and_no_tensorflow(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in ('fastapi', 'starlette', 'tensorflow', 'keras') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
