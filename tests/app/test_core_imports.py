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


def _printed(code: str) -> str:
    """What `code` prints in a fresh interpreter (imports are per process)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_web_framework_and_no_tensorflow(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in ('fastapi', 'starlette', 'tensorflow', 'keras') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


def test_starting_the_server_imports_no_metrics_before_their_folder_is_made() -> None:
    """`python -m app` prepares PROMETHEUS_MULTIPROC_DIR after its imports, and
    app.telemetry creates its metrics (files in that folder) on import: round 31's raw-answer
    counting imported it early, and every start with the variable set to a folder not yet made
    failed (14 errors in the full run)."""
    code = "import sys, app.__main__, app.start\nprint('app.telemetry' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_the_dealing_parent_holds_no_numpy_and_no_onnxruntime() -> None:
    """The parent only deals connections: with numpy and onnxruntime imported (a catalog-name
    check in Settings, the CUDA probe of providers=auto) it held 74 MiB instead of 46."""
    printed = _printed(
        "import sys, app.start as m\n"
        "m._settings()\n"
        "print(m._gpu('auto'))\n"
        "print(','.join(x for x in ('numpy', 'onnxruntime', 'PIL') if x in sys.modules))\n"
    )
    assert printed.split() == ["False"], printed


def test_the_dealing_parent_imports_neither_the_web_stack_nor_pydantic() -> None:
    """After the hand-over (app.dealer) the parent held pydantic, pydantic-settings and uvicorn
    for the server's lifetime: 46-47 MiB resident for a process that only deals connections."""
    printed = _printed(
        "import sys, app.__main__, app.dealer, app.heavy_decode, app.log_format, app.multiproc\n"
        "import app.serve\n"
        "heavy = ('pydantic', 'uvicorn', 'starlette', 'fastapi', 'numpy', 'onnxruntime', 'PIL')\n"
        "print(','.join(x for x in heavy if x in sys.modules) or 'none')\n"
    )
    assert printed.split() == ["none"], printed


def test_a_worker_imports_faiss_and_onnx_only_when_used() -> None:
    """faiss (a catalog index) and onnx (teaching, downloads) cost 23 MiB per worker that
    never uses them."""
    printed = _printed(
        "import sys, app.main\nprint(','.join(x for x in ('faiss', 'onnx') if x in sys.modules))\n"
    )
    assert printed.strip() == "", printed
